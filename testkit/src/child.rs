//! The child-process protocol that multi-process scenarios (process races, client crashes) share.
//!
//! A `#[test]` re-runs itself as a child process: the test binary is started again with
//! `--exact <test name>`, and an environment variable of the scenario's own carries the child's
//! part (a spec such as `<namespace>\t<child name>`). The same test function then finds that
//! variable set ([`child_spec`]), plays the child and prints tagged lines on stdout
//! ([`tell`]), which the parent reads back ([`told`]).

use std::process::{Command, Stdio};

/// In a child process of the scenario marked by `env`: its spec; in the parent: `None`.
pub fn child_spec(env: &str) -> Option<String> {
    std::env::var(env).ok()
}

/// The command that re-runs `test_name` of this test binary as a child: `env` set to `spec`,
/// `extra_env` added (for instance the URL of a server the parent started), stdout and stderr
/// piped, stdin closed (set it again to pipe one).
pub fn child_command(
    test_name: &str,
    env: &str,
    spec: &str,
    extra_env: &[(&str, String)],
) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(env, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command
}

/// In a child: prints the line `<tag> <fields>` on stdout for the parent.
pub fn tell(tag: &str, fields: std::fmt::Arguments<'_>) {
    println!("{tag} {fields}");
}

/// What a child told under `tag`: the rest of `line` after `<tag> `, if the line holds it (the
/// test harness may print its own text before it on the same line).
pub fn told<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.split_once(format!("{tag} ").as_str())
        .map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::told;

    #[test]
    fn told_finds_the_tag_anywhere_in_the_line() {
        assert_eq!(told("test x ... ACK 3 true", "ACK"), Some("3 true"));
        assert_eq!(told("ACK 4 false", "ACK"), Some("4 false"));
        assert_eq!(told("running 1 test", "ACK"), None);
    }
}
