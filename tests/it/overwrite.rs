//! Isolated overwrites (issue 16): replacing a cube with `--overwrite` never exposes a mix. The
//! replacement is written beside the old cube and switched in at once (locally a directory
//! exchange, on S3 a conditional put of the root metadata naming a new data prefix), so a
//! reader sees the whole old cube or the whole new one, or fails with "replaced while
//! reading; re-run" — never holes. The races are made deterministic with the hidden
//! `--hold-tasks-while FILE` hook (a run waits before its first task while FILE exists and
//! says so with `FILE.held`). The same scenarios run on S3 (`s3::overwrite`).

use crate::common::output::show;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where the scenarios run: an input cube, an output URL and how to run the binary there.
pub(crate) struct Target<'a> {
    /// The input cube (the fixtures).
    pub input: String,
    /// The output cube the scenarios replace.
    pub out: String,
    /// The binary with `args` (and the environment the location needs).
    pub cmd: &'a (dyn Fn(&[&str]) -> Command + Sync),
    /// Whether a replacement is being written (chunks of it are stored beside the cube).
    pub staged: &'a (dyn Fn() -> bool + Sync),
    /// What the location holds besides the one cube (leftovers of a replacement).
    pub leftovers: &'a (dyn Fn() -> Vec<String> + Sync),
}

/// The two contents a reader may see.
pub(crate) const A: &str = "v=nir-red";
pub(crate) const B: &str = "v=nir+red";

impl Target<'_> {
    fn output(&self, args: &[&str]) -> Output {
        (self.cmd)(args).output().expect("run chunkcube")
    }
    fn write_args<'b>(&'b self, expr: &'b str) -> Vec<&'b str> {
        vec![
            "calc",
            &self.input,
            "--expr",
            expr,
            "--out",
            &self.out,
            "--overwrite",
            "--quiet",
        ]
    }
    /// Write result `expr` over the output (must succeed).
    pub(crate) fn write(&self, expr: &str) {
        let o = self.output(&self.write_args(expr));
        assert!(o.status.success(), "write {expr}: {}", show(&o));
    }
    /// Every value of the output, as `load --print-all` prints it.
    pub(crate) fn read(&self) -> Output {
        self.output(&["load", &self.out, "--print-all", "--quiet"])
    }
    fn read_ok(&self) -> String {
        let o = self.read();
        assert!(o.status.success(), "read: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// What a reader prints of content A and of content B.
    fn contents(&self) -> (String, String) {
        self.write(B);
        let b = self.read_ok();
        self.write(A);
        let a = self.read_ok();
        assert_ne!(a, b, "the two contents must be told apart");
        (a, b)
    }
}

/// Wait (bounded) for `cond`, failing with `what` and the child's state.
fn wait_for(what: &str, child: &mut std::process::Child, cond: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what}: the run ended first ({st})");
        }
        assert!(Instant::now() < deadline, "{what}: timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn held(hold: &Path) -> PathBuf {
    PathBuf::from(format!("{}.held", hold.display()))
}

/// Start a writer that holds on `hold` (`--hold-tasks-while`), SIGKILL it once it is held
/// mid-write, and remove the hold file.
fn kill_once_held(mut c: Command, hold: &Path) {
    let mut w = c.stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the writer is held", &mut w, &|| held(hold).exists());
    w.kill().unwrap();
    w.wait().unwrap();
    std::fs::remove_file(hold).unwrap();
}

/// A writer held mid-overwrite (some of its replacement's chunks written): readers meanwhile see
/// the whole old cube; once it finishes, the whole new one, and nothing is left beside it.
pub(crate) fn held_writer_keeps_the_old_cube_readable(t: &Target, hold_dir: &Path) {
    let (a, b) = t.contents();
    let hold = hold_dir.join("hold-writer");
    std::fs::write(&hold, b"").unwrap();
    let mut args = t.write_args(B);
    let h = hold.to_string_lossy().to_string();
    // Held with some of the new chunks written (two workers: the task that waits is picked
    // up by a worker that finished one of the first three).
    args.extend([
        "--hold-tasks-while",
        &h,
        "--hold-after-tasks",
        "3",
        "--threads",
        "2",
    ]);
    let mut w = (t.cmd)(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the writer is held", &mut w, &|| held(&hold).exists());
    assert!(
        (t.staged)(),
        "the replacement is written beside the old cube"
    );
    for _ in 0..2 {
        assert_eq!(
            t.read_ok(),
            a,
            "while replaced, a reader reads the old cube whole"
        );
    }
    let info = t.output(&["info", &t.out]);
    assert!(info.status.success(), "{}", show(&info));
    std::fs::remove_file(&hold).unwrap();
    let o = w.wait_with_output().unwrap();
    assert!(o.status.success(), "the held writer finishes: {}", show(&o));
    assert_eq!(t.read_ok(), b, "after the switch, the new cube whole");
    assert!(!(t.staged)(), "no staging left");
    assert_eq!(
        (t.leftovers)(),
        Vec::<String>::new(),
        "the old cube is removed"
    );
}

/// A reader that opened the cube, held before its first chunk while the cube is replaced,
/// fails with "replaced while reading; re-run" (its chunks are gone or belong to another
/// cube), never returns holes or a mix.
pub(crate) fn held_reader_fails_replaced(t: &Target, hold_dir: &Path) {
    t.write(A);
    let hold = hold_dir.join("hold-reader");
    std::fs::write(&hold, b"").unwrap();
    let h = hold.to_string_lossy().to_string();
    let mut r = (t.cmd)(&[
        "load",
        &t.out,
        "--print-all",
        "--quiet",
        "--hold-tasks-while",
        &h,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("the reader is held", &mut r, &|| held(&hold).exists());
    t.write(B);
    std::fs::remove_file(&hold).unwrap();
    let o = r.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was replaced while reading") && err.contains("re-run"),
        "{err}"
    );
    assert!(err.contains(&t.out), "names the cube: {err}");
}

/// Readers in a loop while another thread replaces the cube in a loop (both bounded): every
/// read is the whole of one content or fails with "replaced while reading".
pub(crate) fn readers_racing_overwrites_never_see_holes(t: &Target, rounds: usize) {
    let (a, b) = t.contents();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut whole, mut refused) = (0, 0);
    let writes = std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < rounds {
                t.write(if n % 2 == 0 { B } else { A });
                n += 1;
            }
            n
        });
        for _ in 0..rounds {
            let o = t.read();
            if o.status.success() {
                let got = String::from_utf8_lossy(&o.stdout);
                assert!(got == a || got == b, "a successful read is one whole cube");
                whole += 1;
            } else {
                let e = String::from_utf8_lossy(&o.stderr);
                assert!(e.contains("was replaced while reading"), "{}", show(&o));
                refused += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    eprintln!("race: {writes} overwrites, {whole} whole reads, {refused} refused");
    assert_eq!((t.leftovers)(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Local cubes

fn local(dir: &Path, input: &Path, out: &Path, f: &dyn Fn(&Target)) {
    let cmd = |args: &[&str]| {
        let mut c = Command::new(crate::common::bin());
        c.args(args);
        c
    };
    let name = out.file_name().unwrap().to_string_lossy().to_string();
    let siblings = || -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&format!("{name}.")))
            .collect()
    };
    // A replacement with chunks of its result written.
    let staged = || {
        siblings()
            .iter()
            .any(|n| n.contains(".chunkcube-new-") && dir.join(n).join("v/c").is_dir())
    };
    let leftovers = || {
        siblings()
            .into_iter()
            .filter(|n| !n.ends_with(".held") && !n.starts_with("hold"))
            .collect()
    };
    f(&Target {
        input: input.to_string_lossy().into(),
        out: out.to_string_lossy().into(),
        cmd: &cmd,
        staged: &staged,
        leftovers: &leftovers,
    });
}

fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let input = crate::common::fixture_cube_64("overwrite").to_path_buf();
    let out = d.path().join("res");
    (d, input, out)
}

#[test]
fn a_held_overwrite_leaves_the_old_cube_whole_until_switched_in() {
    let (d, input, out) = fixture();
    local(d.path(), &input, &out, &|t| {
        held_writer_keeps_the_old_cube_readable(t, d.path())
    });
}

#[test]
fn a_reader_held_across_an_overwrite_fails_replaced() {
    let (d, input, out) = fixture();
    local(d.path(), &input, &out, &|t| {
        held_reader_fails_replaced(t, d.path())
    });
}

#[test]
fn readers_racing_overwrites_in_a_loop_never_see_holes() {
    let (d, input, out) = fixture();
    local(d.path(), &input, &out, &|t| {
        readers_racing_overwrites_never_see_holes(t, 16)
    });
}

#[test]
fn an_interrupted_ingest_overwrite_keeps_the_old_cube_and_resumes_beside_it() {
    use crate::common::{assert_same_tree, ingest_fixtures_args, run_err, run_ok, tree_bytes};
    let d = tempfile::tempdir().unwrap();
    let cube = d.path().join("cube");
    crate::common::ingest_fixtures(&cube, "time=1,y=64,x=64");
    let before = tree_bytes(&cube);
    let new = [
        "--chunks",
        "time=1,y=56,x=56",
        "--threads",
        "2",
        "--overwrite",
    ];
    let plain = &new[..4];
    let mut stopped = ingest_fixtures_args(&cube, &new);
    stopped.extend(["--stop-after-chunks".into(), "10".into()]);
    run_err(&stopped, &[]);
    assert!(tree_bytes(&cube) == before, "the old cube is untouched");
    assert!(crate::common::cube_opens(&cube));
    let staging: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("cube.chunkcube-new-")
        })
        .collect();
    assert_eq!(staging.len(), 1, "the replacement waits beside the cube");
    // The rerun resumes the replacement (the chunks written before are kept) and switches
    // it in: the same bytes as a fresh ingest.
    let (out, err) = run_ok(&ingest_fixtures_args(&cube, &new));
    let _ = out;
    let resumed: u64 = err
        .split(" resumed")
        .next()
        .and_then(|h| h.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(resumed >= 10, "the rerun keeps the chunks written: {err}");
    let fresh = d.path().join("fresh");
    run_ok(&ingest_fixtures_args(&fresh, plain));
    assert_same_tree(&fresh, &cube);
    let left: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("cube."))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "nothing left beside the cube");
}

#[test]
fn a_killed_calc_overwrite_keeps_the_old_cube_and_the_next_one_cleans_up() {
    let (d, input, out) = fixture();
    local(d.path(), &input, &out, &|t| {
        t.write(A);
        let a = t.read_ok();
        let hold = d.path().join("hold-kill");
        std::fs::write(&hold, b"").unwrap();
        let h = hold.to_string_lossy().to_string();
        let mut args = t.write_args(B);
        args.extend(["--hold-tasks-while", &h, "--hold-after-tasks", "3"]);
        kill_once_held((t.cmd)(&args), &hold);
        assert_eq!(t.read_ok(), a, "the old cube is whole after the kill");
        assert!((t.staged)(), "the killed replacement is left beside it");
        // The next overwrite removes it, saying so, and the lock of the dead writer.
        let o = t.output(&t.write_args(B));
        assert!(o.status.success(), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("interrupted overwrite"), "{err}");
        assert!(err.contains("stale writer lock"), "{err}");
        assert_ne!(t.read_ok(), a);
        assert_eq!((t.leftovers)(), Vec::<String>::new());
    });
}

/// A `calc --out` or `load --out` killed mid-write (held by the hidden hook with some chunks
/// written, then SIGKILL, which no handler sees) leaves an unfinished result that does not
/// open; the next run without `--overwrite` replaces it, saying so, and its result reads as a
/// clean run's. A directory that is not this tool's is still refused and left as it was.
#[test]
fn a_killed_write_leaves_nothing_that_blocks_the_next_run() {
    use crate::common::{cube_opens, run_err};
    let (d, input, out) = fixture();
    let i = input.to_string_lossy().to_string();
    let o = out.to_string_lossy().to_string();
    let clean = d.path().join("clean").to_string_lossy().to_string();
    let args = |what: &str, dest: &str| -> Vec<String> {
        let v: Vec<&str> = if what == "calc" {
            vec!["calc", &i, "--expr", B, "--out", dest, "--quiet"]
        } else {
            vec![
                "load",
                &i,
                "--measurements",
                "nir",
                "--out",
                dest,
                "--quiet",
            ]
        };
        v.into_iter().map(String::from).collect()
    };
    let cmd = |a: &[String]| {
        let mut c = Command::new(crate::common::bin());
        c.args(a);
        c
    };
    for what in ["calc", "load"] {
        let _ = std::fs::remove_dir_all(&out);
        let hold = d.path().join(format!("hold-{what}"));
        std::fs::write(&hold, b"").unwrap();
        let h = hold.to_string_lossy().to_string();
        let mut held_args = args(what, &o);
        held_args.extend(
            [
                "--threads",
                "2",
                "--hold-tasks-while",
                &h,
                "--hold-after-tasks",
                "3",
            ]
            .map(String::from),
        );
        kill_once_held(cmd(&held_args), &hold);
        assert!(!cube_opens(&out), "{what}: the killed result does not open");
        assert!(
            crate::common::tree_bytes(&out)
                .keys()
                .any(|k| k.contains("/c/")),
            "{what}: the killed run wrote some chunks"
        );
        // An ingest there is told what it found (it resumes only its own kind; the note on
        // the dead writer's lock comes first).
        let (st, _, e) = crate::common::run(crate::common::ingest_fixtures_args(&out, &[]));
        let last = e.lines().last().unwrap_or_default();
        assert!(
            !st.success()
                && last.starts_with("error: ")
                && last.contains("unfinished chunkcube result")
                && last.contains("--overwrite"),
            "{what}: ingest over the leftover: {e}"
        );
        let r = cmd(&args(what, &o)).output().unwrap();
        assert!(r.status.success(), "{what}: the next run\n{}", show(&r));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains(&format!("replacing {o}")) && err.contains("interrupted"),
            "{what}: the next run says what it replaced: {err}"
        );
        assert!(cube_opens(&out));
        assert!(
            !out.join("chunkcube-job.json").exists(),
            "{what}: the marker goes at commit"
        );
        let _ = std::fs::remove_dir_all(&clean);
        let c = cmd(&args(what, &clean)).output().unwrap();
        assert!(c.status.success(), "{}", show(&c));
        let print = |p: &str| {
            let r = cmd(&["load", p, "--print-all", "--quiet"].map(String::from))
                .output()
                .unwrap();
            assert!(r.status.success(), "{}", show(&r));
            r.stdout
        };
        assert!(
            print(&o) == print(&clean),
            "{what}: the result reads as a clean run's"
        );
    }
    // Not ours: refused, naming it and --overwrite, untouched.
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("sub")).unwrap();
    std::fs::write(out.join("sub/notes.txt"), b"mine").unwrap();
    let line = run_err(
        &args("calc", &o),
        &[&o, "--overwrite", "not a chunkcube cube"],
    );
    assert!(!line.contains("replacing"), "{line}");
    assert_eq!(std::fs::read(out.join("sub/notes.txt")).unwrap(), b"mine");
    // Nor is an unfinished sharded job (its other workers may still run): refused, saying how
    // to finish it.
    let _ = std::fs::remove_dir_all(&out);
    let mut shard = args("calc", &o);
    shard.extend(["--shard", "0/2"].map(String::from));
    let r = cmd(&shard).output().unwrap();
    assert!(r.status.success(), "{}", show(&r));
    let before = crate::common::tree_bytes(&out);
    run_err(
        &args("calc", &o),
        &[
            &o,
            "unfinished calc job of 2 shards",
            "chunkcube commit",
            "--overwrite",
        ],
    );
    assert!(
        crate::common::tree_bytes(&out) == before,
        "the job is left as it was"
    );
    // A committed cube too.
    let _ = std::fs::remove_dir_all(&out);
    let r = cmd(&args("calc", &o)).output().unwrap();
    assert!(r.status.success(), "{}", show(&r));
    run_err(&args("calc", &o), &[&o, "already exists", "--overwrite"]);
}
