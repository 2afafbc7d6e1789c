//! The one function that turns an argv into a command line for a remote POSIX shell.
//!
//! An SSH exec request carries a single string that the remote user's login shell
//! parses. Every remote command ship runs is built from validated values (versions,
//! digests, paths from the inventory) and passes through [`command_line`], never
//! through `format!`.

/// Characters that need no quoting in a POSIX shell word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

/// Quotes one word: unchanged when it is made only of plain characters, else in
/// single quotes, with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line that makes a POSIX shell run exactly `argv`.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_as_they_are() {
        assert_eq!(
            command_line(&["ship-agent", "--json", "receive", "--root", "/srv/shop"]),
            "ship-agent --json receive --root /srv/shop"
        );
        assert_eq!(quote("v1.2.3+build_4"), "v1.2.3+build_4");
    }

    #[test]
    fn everything_else_is_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("`id`"), "'`id`'");
        assert_eq!(quote("a;b|c&d"), "'a;b|c&d'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("'"), "''\\'''");
        assert_eq!(quote("~/x"), "'~/x'");
        assert_eq!(quote("*"), "'*'");
        assert_eq!(quote("line\nbreak"), "'line\nbreak'");
        assert_eq!(
            command_line(&["echo", "it's $HOME"]),
            "echo 'it'\\''s $HOME'"
        );
    }

    #[test]
    fn a_real_shell_gets_back_the_same_words() {
        let words = [
            "plain",
            "with space",
            "it's",
            "$(id)",
            "`x`",
            "a\"b",
            "back\\slash",
            "",
            "*",
            "é",
        ];
        let script = format!("printf '%s\\n' {}", command_line(&words));
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let expected: String = words.iter().map(|w| format!("{w}\n")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }
}
