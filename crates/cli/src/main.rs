fn main() -> std::process::ExitCode {
    sequin_cli::main()
}
