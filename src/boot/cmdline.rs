//! The kernel command line of the rescue environment (DESIGN §8): `ferroclone.*` keys read from
//! `/proc/cmdline`, plus, for tests of the unchanged ISO, the same syntax from a qemu fw_cfg
//! file. Parsing is pure (strings in, a [`BootConfig`] out) so every rule is unit-tested.

use std::fmt;
use std::path::PathBuf;

/// What happens after an unattended run (`ferroclone.after=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum After {
    /// Drop to the interactive environment (the default).
    #[default]
    Shell,
    /// Power the machine off.
    Poweroff,
    /// Reboot.
    Reboot,
}

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            After::Shell => "shell",
            After::Poweroff => "poweroff",
            After::Reboot => "reboot",
        })
    }
}

/// Where the repository lives (`ferroclone.repo=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSpec {
    /// A device path such as `/dev/sdb1`.
    Device(PathBuf),
    /// A filesystem label: `LABEL=x`.
    Label(String),
    /// A filesystem UUID or serial: `UUID=x`.
    Uuid(String),
    /// An NFS export: `nfs://host[:port]/path`.
    Nfs {
        /// Server name or address.
        host: String,
        /// Server port, when not 2049.
        port: Option<u16>,
        /// Exported path (starts with `/`).
        path: String,
    },
    /// An SMB share: `smb://[user[:password]@]host/share` (`%XX` escapes allowed).
    Smb {
        /// User name; empty = guest.
        user: String,
        /// Password.
        password: String,
        /// Server name or address.
        host: String,
        /// Share name.
        share: String,
    },
}

impl fmt::Display for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoSpec::Device(p) => write!(f, "{}", p.display()),
            RepoSpec::Label(l) => write!(f, "LABEL={l}"),
            RepoSpec::Uuid(u) => write!(f, "UUID={u}"),
            RepoSpec::Nfs {
                host,
                port: Some(p),
                path,
            } => write!(f, "nfs://{host}:{p}{path}"),
            RepoSpec::Nfs { host, path, .. } => write!(f, "nfs://{host}{path}"),
            RepoSpec::Smb {
                user, host, share, ..
            } => {
                // The password is never shown.
                if user.is_empty() {
                    write!(f, "smb://{host}/{share}")
                } else {
                    write!(f, "smb://{user}@{host}/{share}")
                }
            }
        }
    }
}

impl RepoSpec {
    /// True for NFS and SMB repositories (the network must be up first).
    pub fn is_network(&self) -> bool {
        matches!(self, RepoSpec::Nfs { .. } | RepoSpec::Smb { .. })
    }

    /// Parses `/dev/X`, `LABEL=x`, `UUID=x`, `nfs://host/path` or
    /// `smb://[user[:password]@]host/share`.
    pub fn parse(s: &str) -> Result<RepoSpec, String> {
        let s = s.trim();
        if let Some(rest) = strip_prefix_ci(s, "nfs://") {
            let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, port) = match hostport.split_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => (h, Some(p)),
                    _ => return Err(format!("{s:?}: {p:?} is not a port number")),
                },
                None => (hostport, None),
            };
            if host.is_empty() || path.is_empty() || !valid_host(host) {
                return Err(format!("{s:?} is not nfs://host[:port]/path"));
            }
            return Ok(RepoSpec::Nfs {
                host: host.to_string(),
                port,
                path: format!("/{}", percent_decode(path)?),
            });
        }
        if let Some(rest) = strip_prefix_ci(s, "smb://").or_else(|| strip_prefix_ci(s, "cifs://")) {
            let (auth, hostshare) = match rest.rsplit_once('@') {
                Some((a, h)) => (Some(a), h),
                None => (None, rest),
            };
            let (host, share) = hostshare.split_once('/').unwrap_or((hostshare, ""));
            let share = share.trim_end_matches('/');
            if host.is_empty() || share.is_empty() || share.contains('/') || !valid_host(host) {
                return Err(format!(
                    "{:?} is not smb://[user[:password]@]host/share",
                    hide_password(s)
                ));
            }
            let (user, password) = match auth {
                None => (String::new(), String::new()),
                Some(a) => {
                    let (u, p) = a.split_once(':').unwrap_or((a, ""));
                    (percent_decode(u)?, percent_decode(p)?)
                }
            };
            return Ok(RepoSpec::Smb {
                user,
                password,
                host: host.to_string(),
                share: percent_decode(share)?,
            });
        }
        if let Some(l) = strip_prefix_ci(s, "LABEL=") {
            if l.is_empty() {
                return Err("ferroclone.repo=LABEL= needs a label".into());
            }
            return Ok(RepoSpec::Label(l.to_string()));
        }
        if let Some(u) = strip_prefix_ci(s, "UUID=") {
            if u.is_empty() {
                return Err("ferroclone.repo=UUID= needs a UUID".into());
            }
            return Ok(RepoSpec::Uuid(u.to_string()));
        }
        if s.starts_with("/dev/") && s.len() > 5 {
            return Ok(RepoSpec::Device(PathBuf::from(s)));
        }
        Err(format!(
            "{:?} is not a device (/dev/…), LABEL=…, UUID=…, nfs://host/path or smb://host/share",
            hide_password(s)
        ))
    }
}

fn valid_host(h: &str) -> bool {
    h.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `smb://user:secret@host/share` -> `smb://user:***@host/share`, for error messages.
fn hide_password(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => {
            let auth = &s[a + 3..b];
            match auth.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &s[..a + 3], &s[b..]),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

/// Decodes `%XX` escapes (so a password can hold `@`, `:`, `/` or spaces).
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a % in a URL must be followed by two hex digits".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape in a URL is not UTF-8".to_string())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Default seconds /init waits for block devices to settle.
pub const DEFAULT_SETTLE: u32 = 8;
/// Upper bound for `ferroclone.settle=`.
pub const MAX_SETTLE: u32 = 600;

/// Everything the `ferroclone.*` keys say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootConfig {
    /// The repository to mount at /repo.
    pub repo: Option<RepoSpec>,
    /// The unattended job: ferroclone arguments, already split into words.
    pub run: Option<Vec<String>>,
    /// What to do when the job ends.
    pub after: After,
    /// Seconds to wait for devices (`ferroclone.settle=`), `None` = default.
    pub settle: Option<u32>,
    /// `ferroclone.net=dhcp`: configure wired interfaces by DHCP.
    pub dhcp: bool,
    /// Problems found: each is reported, and a config with errors runs no job.
    pub errors: Vec<String>,
    /// Keys that were ignored (unknown `ferroclone.*` names), reported as warnings.
    pub warnings: Vec<String>,
}

impl BootConfig {
    /// Parses the texts in order (kernel command line first, then extra sources); for a key
    /// given more than once, the last one wins.
    pub fn parse(texts: &[&str]) -> BootConfig {
        let mut c = BootConfig::default();
        for text in texts {
            for (key, value) in params(text) {
                c.apply(&key, value.as_deref());
            }
        }
        c
    }

    fn apply(&mut self, key: &str, value: Option<&str>) {
        let Some(name) = key.strip_prefix("ferroclone.") else {
            return;
        };
        let v = value.unwrap_or("");
        // A later value replaces an earlier one, including its error.
        let tag = format!("ferroclone.{name}=");
        self.errors.retain(|e| !e.starts_with(&tag));
        let err = |msg: String| format!("{tag}: {msg}");
        match name {
            "repo" => match RepoSpec::parse(v) {
                Ok(r) => self.repo = Some(r),
                Err(e) => {
                    self.repo = None;
                    self.errors.push(err(e));
                }
            },
            "run" => match split_words(v) {
                Ok(w) if w.is_empty() => {
                    self.run = None;
                    self.errors.push(err("empty job".into()));
                }
                Ok(w) => self.run = Some(w),
                Err(e) => {
                    self.run = None;
                    self.errors.push(err(e));
                }
            },
            "after" => match v {
                "shell" => self.after = After::Shell,
                "poweroff" | "halt" => self.after = After::Poweroff,
                "reboot" => self.after = After::Reboot,
                _ => {
                    self.after = After::Shell;
                    self.errors
                        .push(err(format!("{v:?} is not poweroff, reboot or shell")));
                }
            },
            "settle" => match v.parse::<u32>() {
                Ok(n) if n <= MAX_SETTLE => self.settle = Some(n),
                _ => self.errors.push(err(format!(
                    "{v:?} is not a number of seconds up to {MAX_SETTLE}"
                ))),
            },
            "net" => match v {
                "dhcp" => self.dhcp = true,
                "none" | "off" => self.dhcp = false,
                _ => self.errors.push(err(format!("{v:?} is not dhcp or none"))),
            },
            _ => self.warnings.push(format!("unknown key {key} ignored")),
        }
    }

    /// The settings as shell assignments for /init (`eval "$(ferroclone boot --env)"`). Every
    /// value is a fixed word or a number, so nothing from the command line reaches the shell.
    pub fn to_env(&self) -> String {
        format!(
            "FERROCLONE_RUN={}\nFERROCLONE_AFTER={}\nFERROCLONE_SETTLE={}\nFERROCLONE_NET={}\nFERROCLONE_REPO={}\n",
            u8::from(self.run.is_some() || !self.errors.is_empty()),
            self.after,
            self.settle.unwrap_or(DEFAULT_SETTLE),
            if self.dhcp || self.repo.as_ref().is_some_and(RepoSpec::is_network) {
                "dhcp"
            } else {
                "none"
            },
            u8::from(self.repo.is_some()),
        )
    }
}

/// Splits a kernel command line into `(key, value)` pairs the way the kernel does: words are
/// separated by unquoted white space; double quotes group and are removed (`a="b c"` gives
/// `a` = `b c`, and so does `"a=b c"`). A word without `=` has no value.
pub fn params(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut in_quote = false;
    let flush = |word: &mut String, out: &mut Vec<(String, Option<String>)>| {
        match word.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((word.clone(), None)),
        }
        word.clear();
    };
    for ch in text.chars() {
        if ch == '"' {
            in_quote = !in_quote;
            in_word = true;
        } else if ch.is_whitespace() && !in_quote {
            if in_word {
                flush(&mut word, &mut out);
                in_word = false;
            }
        } else {
            word.push(ch);
            in_word = true;
        }
    }
    if in_word {
        flush(&mut word, &mut out);
    }
    out
}

/// Splits a `ferroclone.run` value into arguments like a shell would, without expansion:
/// white space separates; `'…'` is literal; `"…"` groups (a backslash escapes `"` and `\`
/// inside); outside quotes a backslash escapes the next character.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                have = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated ' in {s:?}")),
                    }
                }
            }
            '"' => {
                have = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err(format!("unterminated \" in {s:?}")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated \" in {s:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(x) => {
                    cur.push(x);
                    have = true;
                }
                None => return Err(format!("trailing \\ in {s:?}")),
            },
            c if c.is_whitespace() => {
                if have {
                    words.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_string(), v.map(str::to_string))
    }

    #[test]
    fn params_split_like_the_kernel() {
        let p = params(
            "BOOT_IMAGE=/boot/vmlinuz console=tty0 console=ttyS0,115200 quiet \
             ferroclone.run=\"save /dev/vda /repo/x\" ferroclone.after=poweroff\n",
        );
        assert_eq!(
            p,
            vec![
                kv("BOOT_IMAGE", Some("/boot/vmlinuz")),
                kv("console", Some("tty0")),
                kv("console", Some("ttyS0,115200")),
                kv("quiet", None),
                kv("ferroclone.run", Some("save /dev/vda /repo/x")),
                kv("ferroclone.after", Some("poweroff")),
            ]
        );
    }

    #[test]
    fn params_quote_around_the_whole_word_and_odd_spacing() {
        assert_eq!(
            params("  \"ferroclone.run=save a b\"\t x=  -- y=\"\" "),
            vec![
                kv("ferroclone.run", Some("save a b")),
                kv("x", Some("")),
                kv("--", None),
                kv("y", Some("")),
            ]
        );
        assert_eq!(params(""), vec![]);
        assert_eq!(params("   \n"), vec![]);
        // An unterminated quote runs to the end, as in the kernel.
        assert_eq!(
            params("a=\"b c"),
            vec![kv("a", Some("b c"))],
            "unterminated quote"
        );
        // Only the first = separates key and value.
        assert_eq!(params("a=b=c"), vec![kv("a", Some("b=c"))]);
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words("save /dev/vda /repo/x").unwrap(),
            ["save", "/dev/vda", "/repo/x"]
        );
        assert_eq!(
            split_words("  save  '/repo/my image' \"a b\" c\\ d '' ").unwrap(),
            ["save", "/repo/my image", "a b", "c d", ""]
        );
        assert_eq!(split_words(r#""a\"b\\c\n""#).unwrap(), ["a\"b\\c\\n"]);
        assert_eq!(split_words("x'y'z").unwrap(), ["xyz"]);
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("tail\\").is_err());
        assert!(split_words("   ").unwrap().is_empty());
    }

    #[test]
    fn full_config() {
        let c = BootConfig::parse(&[
            "console=ttyS0 ferroclone.repo=LABEL=REPO ferroclone.run=\"restore /repo/win /dev/nvme0n1\" \
             ferroclone.after=poweroff ferroclone.settle=3 ferroclone.net=dhcp",
        ]);
        assert_eq!(c.repo, Some(RepoSpec::Label("REPO".into())));
        assert_eq!(
            c.run.as_deref().unwrap(),
            ["restore", "/repo/win", "/dev/nvme0n1"]
        );
        assert_eq!(c.after, After::Poweroff);
        assert_eq!(c.settle, Some(3));
        assert!(c.dhcp);
        assert!(c.errors.is_empty() && c.warnings.is_empty(), "{c:?}");
        assert_eq!(
            c.to_env(),
            "FERROCLONE_RUN=1\nFERROCLONE_AFTER=poweroff\nFERROCLONE_SETTLE=3\nFERROCLONE_NET=dhcp\nFERROCLONE_REPO=1\n"
        );
    }

    #[test]
    fn defaults_without_keys() {
        let c = BootConfig::parse(&["BOOT_IMAGE=/boot/vmlinuz ro quiet"]);
        assert_eq!(c, BootConfig::default());
        assert_eq!(c.after, After::Shell);
        assert_eq!(
            c.to_env(),
            "FERROCLONE_RUN=0\nFERROCLONE_AFTER=shell\nFERROCLONE_SETTLE=8\nFERROCLONE_NET=none\nFERROCLONE_REPO=0\n"
        );
    }

    #[test]
    fn later_sources_override_earlier_ones() {
        let c = BootConfig::parse(&[
            "ferroclone.run=bogus'quote ferroclone.after=reboot",
            "ferroclone.run=\"info /repo/a\"\n",
        ]);
        assert_eq!(c.run.as_deref().unwrap(), ["info", "/repo/a"]);
        assert_eq!(c.after, After::Reboot);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }

    #[test]
    fn repo_specs() {
        assert_eq!(
            RepoSpec::parse("/dev/sdb1").unwrap(),
            RepoSpec::Device("/dev/sdb1".into())
        );
        assert_eq!(
            RepoSpec::parse("label=My Stick").unwrap(),
            RepoSpec::Label("My Stick".into())
        );
        assert_eq!(
            RepoSpec::parse("UUID=1234-ABCD").unwrap(),
            RepoSpec::Uuid("1234-ABCD".into())
        );
        assert_eq!(
            RepoSpec::parse("nfs://10.0.2.2/srv/images").unwrap(),
            RepoSpec::Nfs {
                host: "10.0.2.2".into(),
                port: None,
                path: "/srv/images".into()
            }
        );
        let n = RepoSpec::parse("nfs://nas:20490/export").unwrap();
        assert_eq!(
            n,
            RepoSpec::Nfs {
                host: "nas".into(),
                port: Some(20490),
                path: "/export".into()
            }
        );
        assert_eq!(n.to_string(), "nfs://nas:20490/export");
        let smb = RepoSpec::parse("smb://bob:p%40ss:w@nas.lan/backups/").unwrap();
        assert_eq!(
            smb,
            RepoSpec::Smb {
                user: "bob".into(),
                password: "p@ss:w".into(),
                host: "nas.lan".into(),
                share: "backups".into()
            }
        );
        assert_eq!(smb.to_string(), "smb://bob@nas.lan/backups");
        assert!(smb.is_network());
        assert_eq!(
            RepoSpec::parse("smb://srv/share").unwrap(),
            RepoSpec::Smb {
                user: String::new(),
                password: String::new(),
                host: "srv".into(),
                share: "share".into()
            }
        );
        let e = RepoSpec::parse("smb://bob:secret@srv").unwrap_err();
        assert!(e.contains("bob:***@srv") && !e.contains("secret"), "{e}");
        for bad in [
            "",
            "LABEL=",
            "UUID=",
            "sdb1",
            "/dev/",
            "nfs://h",
            "nfs:///p",
            "nfs://a b/p",
            "nfs://h:0/p",
            "nfs://h:x/p",
            "smb://h/a/b",
            "smb://u:%zz@h/s",
            "ftp://h/p",
        ] {
            assert!(RepoSpec::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(RepoSpec::Label("R".into()).to_string(), "LABEL=R");
    }

    #[test]
    fn bad_values_are_errors_and_unknown_keys_warnings() {
        let c = BootConfig::parse(&[
            "ferroclone.after=explode ferroclone.settle=-1 ferroclone.net=wifi \
             ferroclone.repo=sdb ferroclone.run=\"\" ferroclone.colour=blue ferroclonex=1",
        ]);
        assert_eq!(c.errors.len(), 5, "{:?}", c.errors);
        assert!(c.errors.iter().any(|e| e.contains("explode")));
        assert!(c.errors.iter().any(|e| e.starts_with("ferroclone.run=")));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.after, After::Shell);
        assert!(c.run.is_none() && c.repo.is_none());
        // A config with errors still reports a job, so /init runs `ferroclone boot`, which
        // prints the failure line.
        assert!(c.to_env().starts_with("FERROCLONE_RUN=1\n"));
        let c = BootConfig::parse(&["ferroclone.settle=601"]);
        assert_eq!(c.errors.len(), 1);
    }

    #[test]
    fn a_network_repository_turns_dhcp_on() {
        let c = BootConfig::parse(&["ferroclone.repo=nfs://10.0.2.2/export"]);
        assert!(!c.dhcp);
        assert!(c.to_env().contains("FERROCLONE_NET=dhcp\n"));
    }

    #[test]
    fn key_without_value() {
        let c = BootConfig::parse(&["ferroclone.run ferroclone.after"]);
        assert_eq!(c.errors.len(), 2, "{:?}", c.errors);
    }
}
