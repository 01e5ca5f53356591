//! `stepwatch-server`: the relay's command line (`stepwatch_relay::cli`) under the name the
//! server wheel installs, so it never shadows the SDK's own `stepwatch` command (which
//! hands `stepwatch serve` and the other server commands to this binary).

fn main() -> anyhow::Result<()> {
    stepwatch_relay::cli::main()
}
