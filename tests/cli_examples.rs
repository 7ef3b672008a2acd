//! Every example command line in every subcommand's `--help` and in README's
//! `sh` blocks runs as printed (issue 13, defect 18).
//!
//! The examples are extracted, not copied: each `--help` has an "Example:" or
//! "Examples:" block of lines indented by two spaces; README's ```sh blocks
//! hold one command per line (lines starting with `cargo` are the toolchain's
//! and are skipped; `#` starts a comment). Each line runs with `sh -c` in a
//! temporary directory with the `annal` binary first on `PATH`, in order: the
//! help examples of all subcommands share one directory (in the order of
//! `annal --help`), README's share another. A line exits 0 unless it ends
//! with the comment `# exit N`, which documents the code it exits with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUBCOMMANDS: [&str; 13] = [
    "append", "import", "delete", "metadata", "retain", "compact", "read", "tail", "stats", "dump", "check", "anchor",
    "keygen",
];

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_annal"))
}

fn help(sub: &str) -> String {
    let out = Command::new(bin())
        .args([sub, "--help"])
        .output()
        .expect("run annal --help");
    assert!(out.status.success(), "annal {sub} --help failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The example lines of one help text.
fn help_examples(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Example:") || line.starts_with("Examples:") {
            inside = true;
            continue;
        }
        if inside {
            match line.strip_prefix("  ") {
                Some(cmd) if !cmd.trim().is_empty() => out.push(cmd.trim().to_owned()),
                _ => inside = false,
            }
        }
    }
    out
}

/// The command lines of README's ```sh blocks.
fn readme_examples(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = line.trim() == "```sh";
            continue;
        }
        let cmd = line.trim();
        if inside && !cmd.is_empty() && !cmd.starts_with('#') && !cmd.starts_with("cargo ") {
            out.push(cmd.to_owned());
        }
    }
    out
}

/// The exit code a line documents (`# exit N`), else 0.
fn expected_code(cmd: &str) -> i32 {
    cmd.rsplit_once("# exit ")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Run `cmd` with `sh -c` in `dir`; its exit code, stdout and stderr.
fn run_line(dir: &Path, cmd: &str) -> (Option<i32>, String, String) {
    let bin_dir = bin().parent().expect("binary directory").to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir];
    paths.extend(std::env::split_paths(&path));
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    // A guard against an example that never ends (not a timing assertion:
    // a finishing example takes a small fraction of it).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_all(dir: &Path, examples: &[(String, String)]) {
    for (origin, cmd) in examples {
        let want = expected_code(cmd);
        let (code, stdout, stderr) = run_line(dir, cmd);
        assert_eq!(
            code,
            Some(want),
            "{origin}: `{cmd}` exited with {code:?}, its documented exit code is {want}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn every_help_example_runs_as_printed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut all = Vec::new();
    let remote: &[&str] = if cfg!(feature = "remote") {
        &["replicate", "restore"]
    } else {
        &[]
    };
    for sub in SUBCOMMANDS.iter().chain(remote) {
        let examples = help_examples(&help(sub));
        assert!(!examples.is_empty(), "annal {sub} --help has no examples");
        for e in examples {
            assert!(e.contains("annal "), "annal {sub} --help: `{e}` does not run annal");
            all.push((format!("annal {sub} --help"), e));
        }
    }
    run_all(tmp.path(), &all);
    // What the examples promise about their results.
    let (_, out, _) = run_line(tmp.path(), "annal read ./events --stream order-42");
    assert!(
        out.contains("ItemAdded  {\"sku\":\"A-7\"}\n"),
        "stdin payload without its newline:\n{out}"
    );
    assert!(tmp.path().join("rolled/00000000000000000000.idx").exists());
    assert!(
        tmp.path().join("copy2/00000000000000000001.seg").exists(),
        "--segment-size made segments"
    );
}

/// The sessions of README's ```console blocks: each `$ ` line is a command,
/// the lines after it its output. `$ cat FILE` shows a file the session
/// uses: its output lines are written to FILE before the line runs.
fn readme_sessions(text: &str) -> Vec<(String, Option<(String, String)>)> {
    let mut out: Vec<(String, Option<(String, String)>)> = Vec::new();
    let mut inside = false;
    let mut shown = String::new();
    let flush = |out: &mut Vec<(String, Option<(String, String)>)>, shown: &mut String| {
        if let Some((cmd, file)) = out.last_mut()
            && let Some(name) = cmd.strip_prefix("cat ")
        {
            *file = Some((name.trim().to_owned(), std::mem::take(shown)));
        }
        shown.clear();
    };
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            if inside {
                flush(&mut out, &mut shown);
            }
            inside = line.trim() == "```console";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            flush(&mut out, &mut shown);
            out.push((cmd.trim().to_owned(), None));
        } else {
            shown.push_str(line);
            shown.push('\n');
        }
    }
    out
}

#[test]
fn every_readme_session_runs_as_printed() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let sessions = readme_sessions(&readme);
    assert!(sessions.len() >= 10, "README's console blocks: {sessions:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (cmd, file) in &sessions {
        if let Some((name, content)) = file {
            std::fs::write(tmp.path().join(name), content).expect("write a shown file");
        }
        run_all(tmp.path(), &[("README.md console".to_owned(), cmd.clone())]);
    }
    // The session's promise: JSON data kept as written.
    let (_, out, _) = run_line(tmp.path(), "annal read ./events --json");
    assert!(out.contains("\"data\":{\"total\":42}"), "{out}");
}

#[test]
fn every_readme_example_runs_as_printed() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let examples: Vec<(String, String)> = readme_examples(&readme)
        .into_iter()
        .map(|e| ("README.md".to_owned(), e))
        .collect();
    assert!(examples.len() >= 10, "README's sh blocks: {examples:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    run_all(tmp.path(), &examples);
}

#[test]
fn the_extractors_see_comments_and_exit_codes() {
    assert_eq!(expected_code("annal x   # exit 1"), 1);
    assert_eq!(expected_code("annal read ./e   # one JSON object per line"), 0);
    let h = "About\n\nExamples:\n  annal a\n  annal b | head\n\nMore text\n  indented\n";
    assert_eq!(help_examples(h), ["annal a", "annal b | head"]);
    let r =
        "```sh\ncargo test\nannal a   # c\n\n# only a comment\n```\n```console\n$ cat f\nx\ny\n$ annal z\nout\n```\n";
    assert_eq!(readme_examples(r), ["annal a   # c"]);
    assert_eq!(
        readme_sessions(r),
        [
            ("cat f".to_owned(), Some(("f".to_owned(), "x\ny\n".to_owned()))),
            ("annal z".to_owned(), None)
        ]
    );
}
