//! `deploy/seccomp.json`, the seccomp profile for containers: it must be a
//! well-formed Docker/OCI profile, and `cleanslate` must run under it with
//! in-place resets available. The test translates the profile into BPF with
//! `seccompiler` (whose syscall tables check every name on x86_64 and
//! aarch64), installs it in a child process before it execs `cleanslate`,
//! and reads what the child reports. As a control, the same profile without
//! `userfaultfd` must send every reset to the fresh-instance path and name the
//! seccomp filter as the reason.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Value, json};

const PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/seccomp.json");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/example.wat");
const WASI_SAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/wasi_say.wat");

fn profile() -> Value {
    let text = std::fs::read_to_string(PROFILE).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{PROFILE} is not JSON: {e}"))
}

/// The profile's architecture names for a seccompiler target: libseccomp's
/// (`architectures`) and Go's (`includes.arches`, as Docker matches them).
fn arch_names(arch: TargetArch) -> (&'static str, &'static str) {
    match arch {
        TargetArch::x86_64 => ("SCMP_ARCH_X86_64", "amd64"),
        TargetArch::aarch64 => ("SCMP_ARCH_AARCH64", "arm64"),
        other => panic!("the profile is for x86_64 and aarch64, not {other:?}"),
    }
}

fn host_arch() -> TargetArch {
    TargetArch::try_from(std::env::consts::ARCH).unwrap()
}

/// Whether a rule applies on `go_arch`. Only `arches` conditions are used
/// (capabilities and kernel versions are not), so only those are read.
fn applies(rule: &Value, go_arch: &str) -> bool {
    let listed = |key: &str| -> Option<bool> {
        let cond = rule.get(key)?.as_object()?;
        for field in cond.keys() {
            assert_eq!(field, "arches", "{key}.{field}: only arches is translated");
        }
        let arches = cond.get("arches")?.as_array().unwrap();
        Some(arches.iter().any(|a| a == go_arch))
    };
    listed("includes").unwrap_or(true) && !listed("excludes").unwrap_or(false)
}

/// seccompiler's JSON action for a profile action.
fn action(name: &str, errno: Option<u64>) -> Value {
    match name {
        "SCMP_ACT_ALLOW" => json!("allow"),
        "SCMP_ACT_ERRNO" => json!({ "errno": errno.unwrap_or(1) }),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => json!("kill_thread"),
        "SCMP_ACT_KILL_PROCESS" => json!("kill_process"),
        "SCMP_ACT_TRAP" => json!("trap"),
        "SCMP_ACT_LOG" => json!("log"),
        other => panic!("action {other} is not translated"),
    }
}

/// seccompiler's condition for a profile argument condition (libseccomp
/// compares whole 64-bit arguments).
fn condition(arg: &Value) -> Value {
    let value = arg["value"].as_u64().unwrap();
    let two = arg.get("valueTwo").and_then(Value::as_u64).unwrap_or(0);
    let (op, val) = match arg["op"].as_str().unwrap() {
        "SCMP_CMP_EQ" => (json!("eq"), value),
        "SCMP_CMP_NE" => (json!("ne"), value),
        "SCMP_CMP_LT" => (json!("lt"), value),
        "SCMP_CMP_LE" => (json!("le"), value),
        "SCMP_CMP_GT" => (json!("gt"), value),
        "SCMP_CMP_GE" => (json!("ge"), value),
        // (arg & value) == valueTwo
        "SCMP_CMP_MASKED_EQ" => (json!({ "masked_eq": value }), two),
        other => panic!("comparison {other} is not translated"),
    };
    json!({ "index": arg["index"], "type": "qword", "op": op, "val": val })
}

/// The profile as BPF programs for `arch`, in the order to install them,
/// leaving out the syscalls in `without`.
///
/// A seccompiler filter has one action for all its rules, so the profile
/// becomes one filter per action: first the allow-list (its rules allow, the
/// rest get the default action), then one per other action, whose rules get
/// that action and the rest are allowed (left to the first). The kernel
/// applies the most restrictive result of all filters, and of two errno
/// results the one from the filter installed last, so each rule's own
/// action wins over the default, as in libseccomp. A name may appear only
/// once per architecture (checked), so rules never compete.
fn compile(profile: &Value, arch: TargetArch, without: &[&str]) -> Vec<BpfProgram> {
    let (scmp_arch, go_arch) = arch_names(arch);
    let arches = profile["architectures"].as_array().unwrap();
    assert!(
        arches.contains(&json!(scmp_arch)),
        "{scmp_arch} not in architectures"
    );
    let default = action(
        profile["defaultAction"].as_str().unwrap(),
        profile["defaultErrnoRet"].as_u64(),
    );
    // Rules by action, the allow-list first.
    let mut by_action: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    by_action.insert(String::new(), (json!("allow"), Vec::new()));
    let mut seen = HashSet::new();
    for rule in profile["syscalls"].as_array().unwrap() {
        if !applies(rule, go_arch) {
            continue;
        }
        let act = action(rule["action"].as_str().unwrap(), rule["errnoRet"].as_u64());
        let key = if act == "allow" {
            String::new()
        } else {
            act.to_string()
        };
        let conditions: Option<Vec<Value>> = rule
            .get("args")
            .map(|args| args.as_array().unwrap().iter().map(condition).collect());
        for name in rule["names"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(seen.insert(name), "{name} appears twice for {go_arch}");
            if without.contains(&name) {
                continue;
            }
            let mut entry = json!({ "syscall": name });
            if let Some(conditions) = &conditions {
                entry["args"] = json!(conditions);
            }
            let slot = by_action
                .entry(key.clone())
                .or_insert_with(|| (act.clone(), Vec::new()));
            slot.1.push(entry);
        }
    }
    let filters: serde_json::Map<String, Value> = by_action
        .iter()
        .enumerate()
        .map(|(i, (_, (act, rules)))| {
            let (mismatch, matched) = if i == 0 {
                (default.clone(), json!("allow"))
            } else {
                (json!("allow"), act.clone())
            };
            let filter =
                json!({ "mismatch_action": mismatch, "match_action": matched, "filter": rules });
            (format!("{i:03}"), filter)
        })
        .collect();
    let mut compiled =
        seccompiler::compile_from_json(Value::Object(filters).to_string().as_bytes(), arch)
            .unwrap_or_else(|e| panic!("{PROFILE} for {arch:?}: {e}"));
    (0..by_action.len())
        .map(|i| compiled.remove(&format!("{i:03}")).unwrap())
        .collect()
}

/// `cleanslate ARGS` with the filters installed in the child before it
/// execs; spawning it fails with the error if they cannot be installed.
fn command_under(filters: Vec<BpfProgram>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cleanslate"));
    command.args(args);
    // SAFETY: the closure runs in the forked child before exec. It only
    // makes the prctl and seccomp system calls on programs compiled (and
    // allocated) in the parent, and turns a failure into an io::Error from
    // an errno or a kind, none of which allocates or takes a lock.
    unsafe {
        command.pre_exec(move || {
            for filter in &filters {
                // Sets no_new_privs first, so no privilege is needed.
                seccompiler::apply_filter(filter).map_err(|e| match e {
                    seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                    _ => io::Error::from(io::ErrorKind::Other),
                })?;
            }
            Ok(())
        });
    }
    command
}

/// Whether a filtered child can be expected to reset in place: this machine
/// allows it unfiltered, and the filter can be installed. When not, this
/// fails if CI expects it (`CLEANSLATE_EXPECT_TRACKING`), else prints why and
/// returns false: the test is skipped.
fn filtered_children_can_run() -> bool {
    let expected = std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_some();
    let resets = cleanslate::Runtime::new().unwrap().in_place_resets();
    let problem = if !resets.available() {
        Some(format!(
            "this machine has no in-place resets even unfiltered: {}",
            resets.reason()
        ))
    } else {
        let filters = compile(&profile(), host_arch(), &[]);
        match command_under(filters, &["--version"]).output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "`cleanslate --version` under the profile failed: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Some(format!("cannot install a seccomp filter here: {e}")),
        }
    };
    match problem {
        None => true,
        Some(why) if expected => panic!("CLEANSLATE_EXPECT_TRACKING is set but {why}"),
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// `cleanslate ARGS` under the profile without `without`, which must exit
/// with `code` (1 when a call failed).
fn run_under(without: &[&str], args: &[&str], code: i32) -> Output {
    let filters = compile(&profile(), host_arch(), without);
    let out = command_under(filters, args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "cleanslate {args:?} without {without:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A fresh module-cache directory for one test.
fn cache_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cleanslate-seccomp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_profile_is_a_docker_format_allow_list_with_userfaultfd() {
    let profile = profile();
    let top: HashSet<&str> = profile
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        top,
        HashSet::from([
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "syscalls"
        ])
    );
    // Read alike by Docker (which refuses `architectures` and `archMap`
    // together) and containerd (which reads only the OCI fields and ignores
    // `includes` and `comment`: runc then skips a name the node's
    // architecture lacks).
    assert_eq!(
        profile["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"])
    );
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(profile["defaultErrnoRet"], 1, "EPERM, as runtimes refuse");
    let rule_keys = HashSet::from([
        "comment", "names", "action", "errnoRet", "args", "includes", "excludes",
    ]);
    let mut names = HashSet::new();
    for rule in profile["syscalls"].as_array().unwrap() {
        for key in rule.as_object().unwrap().keys() {
            assert!(
                rule_keys.contains(key.as_str()),
                "unexpected {key} in {rule}"
            );
        }
        assert!(rule["comment"].as_str().is_some_and(|c| !c.is_empty()));
        let rule_names = rule["names"].as_array().unwrap();
        assert!(!rule_names.is_empty(), "{rule}");
        for name in rule_names {
            let name = name.as_str().unwrap();
            assert!(names.insert(name), "{name} is listed twice");
        }
    }
    // userfaultfd, everywhere and unconditionally: the point of the profile.
    let uffd = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["names"]
                .as_array()
                .unwrap()
                .contains(&json!("userfaultfd"))
        })
        .expect("userfaultfd is allowed");
    assert_eq!(uffd["action"], "SCMP_ACT_ALLOW");
    for key in ["args", "includes", "excludes"] {
        assert!(uffd.get(key).is_none(), "userfaultfd has {key}: {uffd}");
    }
    // An allow-list of ordinary calls: none of what runtimes keep for
    // privileged containers.
    for privileged in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "pivot_root",
        "chroot",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "bpf",
        "perf_event_open",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "acct",
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "open_by_handle_at",
        "settimeofday",
        "clock_settime",
        "personality",
        "quotactl",
        "syslog",
    ] {
        assert!(!names.contains(privileged), "{privileged} is allowed");
    }
    // Every name is a syscall on each architecture its rule applies to, and
    // the whole profile compiles for both.
    for arch in [TargetArch::x86_64, TargetArch::aarch64] {
        let programs = compile(&profile, arch, &[]);
        assert_eq!(programs.len(), 2, "the allow-list and clone3's ENOSYS");
        assert!(programs.iter().all(|p| !p.is_empty()));
    }
}

#[test]
fn under_the_profile_run_and_inspect_reset_in_place() {
    if !filtered_children_can_run() {
        return;
    }
    let cache = cache_dir("in-place");
    let cache = cache.to_str().unwrap();
    let out = run_under(&[], &["inspect", EXAMPLE, "--cache-dir", cache], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("this machine: in-place resets available"),
        "{text}"
    );
    // Twice: compiling into the cache, then loading from it.
    for _ in 0..2 {
        let out = run_under(
            &[],
            &[
                "run",
                EXAMPLE,
                "--json",
                "--cache-dir",
                cache,
                "add:2,3",
                "leave_secret:99",
                "read_secret",
            ],
            0,
        );
        let records = json_lines(&out);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0]["results"], json!([5]));
        assert_eq!(records[2]["results"], json!([0]), "the secret is gone");
        for record in &records {
            assert_eq!(record["reset"]["path"], "in_place", "{record}");
        }
    }
    // A WASI guest, its stdout, and a guest trap.
    let out = run_under(
        &[],
        &[
            "run",
            WASI_SAY,
            "--json",
            "--cache-dir",
            cache,
            "say:7",
            "say_and_trap:8",
            "nap",
        ],
        1,
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["stdout"], "say 7\n", "{}", records[0]);
    assert_eq!(records[1]["ok"], false, "{}", records[1]);
    assert_eq!(records[2]["ok"], true, "{}", records[2]);
    for record in &records {
        assert_eq!(record["reset"]["path"], "in_place", "{record}");
    }
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn under_the_profile_serve_answers_and_exports_in_place_available() {
    if !filtered_children_can_run() {
        return;
    }
    let filters = compile(&profile(), host_arch(), &[]);
    let mut child = command_under(
        filters,
        &[
            "serve",
            EXAMPLE,
            "--listen",
            "127.0.0.1:0",
            "--pool",
            "2",
            "--no-cache",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let request = |method: &str, path: &str, body: &str| -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    for _ in 0..3 {
        let answer = request("POST", "/call/add", r#"{"args":[2,3]}"#);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(r#"{"results":[5]}"#), "{answer}");
    }
    let metrics = request("GET", "/metrics", "");
    assert!(
        metrics.contains("\ncleanslate_in_place_reset_available 1\n"),
        "{metrics}"
    );
    // A graceful stop on SIGTERM, under the filter too.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("reset path: in place"), "{log}");
}

#[test]
fn without_userfaultfd_the_same_profile_falls_back_and_names_seccomp() {
    if !filtered_children_can_run() {
        return;
    }
    let out = run_under(&["userfaultfd"], &["inspect", EXAMPLE, "--no-cache"], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("this machine: in-place resets UNAVAILABLE"),
        "{text}"
    );
    assert!(
        text.contains("refused by this process's seccomp filter"),
        "{text}"
    );
    let out = run_under(
        &["userfaultfd"],
        &[
            "run",
            EXAMPLE,
            "--json",
            "--no-cache",
            "add:2,3",
            "leave_secret:99",
            "read_secret",
        ],
        0,
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["results"], json!([5]));
    assert_eq!(records[2]["results"], json!([0]), "the secret is gone");
    for record in &records {
        assert_eq!(record["reset"]["path"], "fresh_instance", "{record}");
    }
}
