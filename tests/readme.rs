//! The README's examples, run as a newcomer would run them, so the README
//! cannot drift from the binary.
//!
//! Every ```` ```console ```` and ```` ```sh ```` block of README.md runs, in
//! order, in one bash session in a scratch copy of the checkout's `config/`
//! directory, with the binary under test as `jwkd`: shell variables and
//! functions defined by one block are there for the next, as in a terminal.
//!
//! - In a `console` block, a line `$ command` (continued by lines ending in
//!   `\`) runs, and the lines up to the next `$ ` are its expected output
//!   (stdout and stderr together). In an expected line, `…` stands for any
//!   text; a line that is only `...` stands for any number of lines.
//! - A `sh` block runs as a script under `set -e`: any failing command fails
//!   the test.
//! - A block preceded by `<!-- readme-test: skip (why) -->` does not run; the
//!   reason is required (for example: it installs a system service).
//!
//! `jwkd serve …` starts the daemon in the background (stopping the one
//! before) and waits until it answers, as a reader would in a second
//! terminal. The reader's daemon listens on `127.0.0.1:8080`; here it listens
//! on a free port, written in place of `8080` in the config it starts, in the
//! commands and in the expected output. The first set-up command's daemon is
//! started before the first block.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{TestDir, run_cmd};

/// How a block is run.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// Commands, each with its expected output.
    Console(Vec<Step>),
    /// A script that must succeed.
    Script(String),
}

/// One command of a console block.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    command: String,
    expected: Vec<String>,
}

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    kind: Kind,
}

const SKIP: &str = "<!-- readme-test: skip";

/// The blocks of `markdown` that run, in order.
fn blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut line_idx = 0;
    while line_idx < lines.len() {
        let Some(info) = lines[line_idx].strip_prefix("```") else {
            line_idx += 1;
            continue;
        };
        let open = line_idx;
        let close = (open + 1..lines.len())
            .find(|&idx| lines[idx].trim_end() == "```")
            .ok_or_else(|| format!("README.md:{}: a code block is never closed", open + 1))?;
        let body = &lines[open + 1..close];
        line_idx = close + 1;
        let language = info.split_whitespace().next().unwrap_or("");
        if language != "console" && language != "sh" {
            continue;
        }
        let previous = lines[..open]
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .copied()
            .unwrap_or("");
        if let Some(rest) = previous.trim().strip_prefix(SKIP) {
            if rest.trim_end_matches("-->").trim().len() < 3 {
                return Err(format!(
                    "README.md:{}: a skipped block needs a reason: {SKIP} (why) -->",
                    open + 1
                ));
            }
            continue;
        }
        let kind = if language == "sh" {
            Kind::Script(body.join("\n"))
        } else {
            Kind::Console(steps(body).map_err(|err| format!("README.md:{}: {err}", open + 1))?)
        };
        blocks.push(Block {
            line: open + 1,
            kind,
        });
    }
    Ok(blocks)
}

fn steps(body: &[&str]) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in body {
        if continued {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
            });
            continued = command.ends_with('\\');
        } else {
            let step = steps
                .last_mut()
                .ok_or_else(|| format!("output before the first command: {line:?}"))?;
            step.expected.push((*line).to_owned());
        }
    }
    Ok(steps)
}

/// Whether `actual` matches the expected `pattern` line, where `…` stands
/// for any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the `actual` lines match the `expected` ones, where a line `...`
/// stands for any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more)),
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn curl() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("curl");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "curl is not installed: the README's examples use it. Install it with \
         `apt-get install curl`, or run ./scripts/test, which does."
    );
}

/// Defines `jwkd` for the session: the binary under test, except that
/// `jwkd serve` runs in the background on the test's port, as in a second
/// terminal, and the session waits until it answers.
fn prelude(port: u16, binary: &Path, log: &Path) -> String {
    format!(
        r#"export NO_COLOR=1 JWKD_LOG=info
unset JWKD_CONFIG RUST_LOG
JWKD_BIN='{binary}'
DAEMON_LOG='{log}'
DAEMON_PID=
stop_daemon() {{
    if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=; fi
}}
trap stop_daemon EXIT
jwkd() {{
    if [ "${{1:-}}" != serve ]; then "$JWKD_BIN" "$@"; return; fi
    stop_daemon
    local config= prev= arg
    for arg in "$@"; do [ "$prev" = --config ] && config=$arg; prev=$arg; done
    [ -n "$config" ] && sed -i 's/127\.0\.0\.1:8080/127.0.0.1:{port}/g' "$config"
    "$JWKD_BIN" "$@" >>"$DAEMON_LOG" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 200); do
        curl -sf -o /dev/null http://127.0.0.1:{port}/healthz && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "jwkd serve did not answer on 127.0.0.1:{port}; its log:" >&2
    cat "$DAEMON_LOG" >&2
    return 1
}}
"#,
        binary = binary.display(),
        log = log.display(),
    )
}

fn with_port(text: &str, port: u16) -> String {
    let here = format!("127.0.0.1:{port}");
    text.replace("127.0.0.1:8080", &here)
        .replace("localhost:8080", &here)
}

#[test]
fn every_console_and_sh_block_of_the_readme_runs_as_shown() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let blocks = blocks(&readme).unwrap_or_else(|err| panic!("{err}"));
    let curl = curl();

    // A scratch checkout: the reference config, as the README's commands expect.
    let dir = TestDir::new("");
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).expect("config dir");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/jwkd.toml"),
        root.join("config/jwkd.toml"),
    )
    .expect("copy config/jwkd.toml");
    let port = free_port();
    let log = root.join("daemon.log");

    let mut script = prelude(port, Path::new(env!("CARGO_BIN_EXE_jwkd")), &log);
    script.push_str("jwkd serve --config config/jwkd.toml || exit 1\n");
    let mut steps = Vec::new();
    for block in &blocks {
        match &block.kind {
            Kind::Script(body) => {
                let _ = writeln!(
                    script,
                    "printf '\\n@@ README.md:{} @@\\n'\nset -e\n{}\nset +e",
                    block.line,
                    with_port(body, port)
                );
            }
            Kind::Console(block_steps) => {
                for step in block_steps {
                    let _ = writeln!(
                        script,
                        "printf '\\n@@ step {} @@\\n'\n{} 2>&1",
                        steps.len(),
                        with_port(&step.command, port)
                    );
                    steps.push((block.line, step));
                }
            }
        }
    }
    script.push_str("printf '\\n@@ end @@\\n'\n");

    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(root)
        .env(
            "PATH",
            format!(
                "{}:{}",
                curl.parent().expect("curl's directory").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", root);
    let outcome = run_cmd(cmd, None, Duration::from_secs(180));
    let output = outcome.stdout.replace('\r', "");
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        output.contains("\n@@ end @@\n"),
        "the README's session stopped early (a `sh` block failed, or jwkd serve did not \
         start); its output:\n{output}\nstderr:\n{}\ndaemon log:\n{daemon_log}",
        outcome.stderr
    );

    let mut failures = String::new();
    for (step_idx, (line, step)) in steps.iter().enumerate() {
        let start = format!("\n@@ step {step_idx} @@\n");
        let begin = output.find(&start).expect("every step ran") + start.len();
        let end = output[begin..]
            .find("\n@@ ")
            .map_or(output.len(), |at| begin + at);
        let actual: Vec<&str> = output[begin..end].lines().map(str::trim_end).collect();
        let expected: Vec<String> = step
            .expected
            .iter()
            .map(|line| with_port(line.trim_end(), port))
            .collect();
        if !lines_match(&expected, &actual) {
            let _ = writeln!(
                failures,
                "README.md:{line}: `{}` printed:\n{}\n  expected:\n{}\n",
                step.command,
                actual.join("\n"),
                expected.join("\n")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{failures}\n(`…` in an expected line stands for any text, a line `...` for any \
         lines)\ndaemon log:\n{daemon_log}"
    );
    eprintln!(
        "README.md: {} blocks, {} console commands matched their output",
        blocks.len(),
        steps.len()
    );
}

#[test]
fn the_matcher_needs_what_it_is_shown() {
    assert!(line_matches("abc", "abc"));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("a…c", "abbbc"));
    assert!(line_matches("…", ""));
    assert!(!line_matches("a…c…d", "acx"));
    assert!(line_matches(
        "{\"kid\":\"…\",\"alg\":\"ES256\"}",
        "{\"kid\":\"x\",\"alg\":\"ES256\"}"
    ));
    assert!(!line_matches("…ES256…", "RS256"));
    let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
    assert!(lines_match(&lines("a\n...\nd"), &["a", "b", "c", "d"]));
    assert!(lines_match(&lines("a\n...\nd"), &["a", "d"]));
    assert!(!lines_match(&lines("a\nd"), &["a", "b", "d"]));
    assert!(!lines_match(&lines("a"), &[]));
    let parsed = blocks(
        "text\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n<!-- readme-test: skip (a service) -->\n\
         ```sh\nsystemctl start x\n```\n```toml\nx = 1\n```\n```sh\nexport A=1\n```\n",
    )
    .unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(
        parsed[0].kind,
        Kind::Console(vec![
            Step {
                command: "echo a \\\n  b".into(),
                expected: vec!["a b".into()],
            },
            Step {
                command: "true".into(),
                expected: vec![],
            },
        ])
    );
    assert_eq!(parsed[1].kind, Kind::Script("export A=1".into()));
    assert!(blocks("<!-- readme-test: skip -->\n```sh\nx\n```\n").is_err());
}

/// Every Rust source file of the project, for looking up test names.
fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy();
            if name != "target" && !name.starts_with('.') {
                rust_sources(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The bad-input table names tests that exist: each `module::name` is a
/// function `name` in the sources, each `module::*` a module with tests.
#[test]
fn the_bad_input_table_names_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Bad input, and what jwkd does with it")
        .nth(1)
        .expect("the README has the bad-input table")
        .split("\n## ")
        .next()
        .unwrap();
    let mut sources = String::new();
    rust_sources(&root.join("src"), &mut sources);
    rust_sources(&root.join("tests"), &mut sources);
    rust_sources(&root.join("client"), &mut sources);
    let mut named = 0;
    for row in section.lines().filter(|line| line.starts_with("| ")) {
        let Some(proof) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for name in proof.split('`').skip(1).step_by(2) {
            if name == "proved by" || !name.contains("::") {
                continue;
            }
            named += 1;
            let last = name.rsplit("::").next().unwrap();
            if last == "*" {
                let module = name.trim_end_matches("::*").rsplit("::").next().unwrap();
                assert!(
                    sources.contains(&format!("mod {module}")),
                    "the bad-input table names tests of a module {module} that does not exist"
                );
            } else {
                assert!(
                    sources.contains(&format!("fn {last}(")),
                    "the bad-input table names a test {name} that does not exist"
                );
            }
        }
    }
    assert!(
        named > 20,
        "only {named} tests named: is the table still there?"
    );
}
