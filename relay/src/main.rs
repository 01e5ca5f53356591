//! The `stepwatch` binary: the relay's command line (`stepwatch_relay::cli`).

fn main() -> anyhow::Result<()> {
    stepwatch_relay::cli::main()
}
