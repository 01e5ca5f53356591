//! The dashboard binary: mounts the app ([`stepwatch_frontend::start`]).

fn main() {
    stepwatch_frontend::start();
}
