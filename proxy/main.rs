#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    meshgate::cli()
}
