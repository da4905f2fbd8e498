//! `busbar-testbed`: the supervisor process behind [`testbed::Testbed`]. See the library's
//! documentation for the design and `testbed::supervisor` for the stdin protocol.

fn main() -> std::process::ExitCode {
    testbed::supervisor::main()
}
