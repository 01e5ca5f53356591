fn main() {
    stepwatch_frontend::start();
}
