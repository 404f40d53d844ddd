//! The setup cache: a second build of the same setup restores the stored
//! snapshot instead of running the setup, and the sandbox it gives is the
//! one running the setup gives (same state, same clean slate after a run
//! that changed everything). A different setup, environment, tool or input
//! folder misses; a setup that called a tool or left files in /tmp is not
//! stored; a damaged entry is rebuilt; turned off, nothing is stored.

mod common;

use std::path::PathBuf;

use cleanslate_exec::{CodeSandbox, CodeSandboxBuilder};

/// What a run can see of the state: the setup's variables, modules,
/// builtins, environment, random state and /tmp.
const PROBE: &str = r#"
import json, os, sys, random, builtins
print(json.dumps({
    "setup": [greeting, sorted(table.items())],
    "leaked": "leaked" in globals(),
    "modules": sorted(m for m in sys.modules if m.startswith("fractions")),
    "len": len([]),
    "env": os.environ.get("GREETING"),
    "random": random.random(),
    "tmp": sorted(os.listdir("/tmp")),
}))
"#;

const SETUP: &str = "import random, os\ngreeting = 'hello'\ntable = {'a': 1, 'b': [2, 3]}";

const LEAK: &str = r#"
import builtins, fractions, os, random
leaked = 1
greeting = "changed"
table["c"] = 4
builtins.len = lambda obj: 42
os.environ["GREETING"] = "changed"
random.seed(7)
open("/tmp/left", "w").write("x")
raise SystemExit(3)
"#;

/// A builder with a private setup cache folder.
fn builder(name: &str) -> Option<(CodeSandboxBuilder, PathBuf)> {
    let dir = common::repo()
        .join("target/setup-cache-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let builder = common::builder()?
        .cache_dir(&dir)
        .setup(SETUP)
        .env("GREETING", "hi");
    Some((builder, dir))
}

fn probe(sandbox: &mut CodeSandbox) -> serde_json::Value {
    let result = sandbox.run(PROBE).unwrap();
    assert!(result.ok(), "probe failed: {}", common::err(&result));
    serde_json::from_slice(&result.stdout).unwrap()
}

/// The one entry of the setup cache in `dir`.
fn only_entry(dir: &std::path::Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.join("setups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().unwrap()
}

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("setups")).map_or(0, |d| d.count())
}

#[test]
fn a_second_build_restores_the_stored_setup_and_keeps_a_clean_slate() {
    let Some((builder, dir)) = builder("hit") else {
        return;
    };
    let mut ran = builder.clone().build().unwrap();
    assert!(!ran.setup_from_cache());
    assert_eq!(entries(&dir), 1);
    let mut cached = builder.clone().build().unwrap();
    assert!(cached.setup_from_cache());

    let expected = probe(&mut ran);
    assert_eq!(
        expected["setup"],
        serde_json::json!(["hello", [["a", 1], ["b", [2, 3]]]])
    );
    assert_eq!(expected["env"], "hi");
    // The same state, down to the random generator's.
    assert_eq!(probe(&mut cached), expected);
    let leaking = cached.run(LEAK).unwrap();
    assert_eq!(leaking.exit_code, Some(3), "{}", common::err(&leaking));
    assert_eq!(probe(&mut cached), expected, "the leaking run left state");
    // A fork of the cached sandbox starts from the same setup.
    assert_eq!(probe(&mut cached.fork().unwrap()), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_different_setup_environment_or_input_misses() {
    let Some((builder, dir)) = builder("miss") else {
        return;
    };
    builder.clone().build().unwrap();
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), "one").unwrap();
    let variants = [
        builder
            .clone()
            .setup(format!("{SETUP}\ngreeting = 'other'")),
        builder.clone().env("GREETING", "ho"),
        builder.clone().memory_limit(300 << 20),
        builder.clone().input_dir(&input),
    ];
    for variant in variants {
        assert!(!variant.clone().build().unwrap().setup_from_cache());
        assert!(variant.build().unwrap().setup_from_cache());
    }
    // The setup may read the input folder: a changed file is a miss.
    std::fs::write(input.join("data.txt"), "three").unwrap();
    let with_input = builder.clone().input_dir(&input);
    assert!(!with_input.clone().build().unwrap().setup_from_cache());
    assert!(with_input.build().unwrap().setup_from_cache());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_setup_that_called_a_tool_or_left_files_is_not_stored() {
    let Some((builder, dir)) = builder("not-stored") else {
        return;
    };
    let tool = builder
        .clone()
        .tool("now", "the time", |_| Ok(serde_json::json!(1)));
    // Offering a tool is fine: the setup below does not call it.
    tool.clone().build().unwrap();
    assert!(tool.clone().build().unwrap().setup_from_cache());
    let calls = tool.setup(format!("{SETUP}\nstarted = call_tool('now')"));
    calls.clone().build().unwrap();
    assert!(!calls.build().unwrap().setup_from_cache());
    let files = builder.setup(format!("{SETUP}\nopen('/tmp/made', 'w').write('x')"));
    files.clone().build().unwrap();
    assert!(!files.build().unwrap().setup_from_cache());
    assert_eq!(entries(&dir), 1, "only the tool-offering setup is stored");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_entry_is_rebuilt() {
    let Some((builder, dir)) = builder("damaged") else {
        return;
    };
    let expected = probe(&mut builder.clone().build().unwrap());
    let entry = only_entry(&dir);
    let bytes = std::fs::read(&entry).unwrap();
    // A digit of the buffers' record (which says where runs' code goes)
    // changed into another digit: still a well-formed record.
    let digit = 20 + bytes[20..].iter().position(u8::is_ascii_digit).unwrap();
    let mut moved_buffer = bytes.clone();
    moved_buffer[digit] = if bytes[digit] == b'9' {
        b'8'
    } else {
        bytes[digit] + 1
    };
    for damage in [
        bytes[..bytes.len() / 2].to_vec(),
        {
            let mut flipped = bytes.clone();
            flipped[bytes.len() - 1000] ^= 1;
            flipped
        },
        moved_buffer,
    ] {
        std::fs::write(&entry, damage).unwrap();
        let mut rebuilt = builder.clone().build().unwrap();
        assert!(!rebuilt.setup_from_cache());
        // The setup ran again: all the same but the random seed, which
        // each interpreter start draws anew.
        let mut seen = probe(&mut rebuilt);
        seen["random"] = expected["random"].clone();
        assert_eq!(seen, expected);
        assert!(builder.clone().build().unwrap().setup_from_cache());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tools_and_environment_never_share_a_key() {
    let Some((builder, dir)) = builder("collide") else {
        return;
    };
    // A tool named "env" described "A" beside GREETING=hi (the helper's),
    // against the variables A=env then GREETING=hi: the same strings in the
    // same order unless the key counts its lists.
    let tool = builder.tool("env", "A", |_| Ok(serde_json::json!(1)));
    tool.clone().build().unwrap();
    assert!(tool.build().unwrap().setup_from_cache());
    let mut env = common::builder()
        .unwrap()
        .cache_dir(&dir)
        .setup(SETUP)
        .env("A", "env")
        .env("GREETING", "hi")
        .build()
        .unwrap();
    assert!(!env.setup_from_cache(), "the tool's setup was restored");
    let result = env.run("import os; print(os.environ['A'])").unwrap();
    assert_eq!(common::out(&result), "env\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn an_entry_someone_else_could_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let Some((builder, dir)) = builder("shared") else {
        return;
    };
    builder.clone().build().unwrap();
    let setups = dir.join("setups");
    std::fs::set_permissions(&setups, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(!builder.clone().build().unwrap().setup_from_cache());
    std::fs::set_permissions(&setups, std::fs::Permissions::from_mode(0o700)).unwrap();
    // An entry that is a link to a file elsewhere is not followed.
    let entry = only_entry(&dir);
    let elsewhere = dir.join("elsewhere");
    std::fs::rename(&entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    assert!(!builder.clone().build().unwrap().setup_from_cache());
    // The link was replaced by a stored entry of its own.
    assert!(builder.build().unwrap().setup_from_cache());
    assert!(!std::fs::symlink_metadata(&entry).unwrap().is_symlink());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn turned_off_nothing_is_stored_or_used() {
    let Some((builder, dir)) = builder("off") else {
        return;
    };
    let off = builder.setup_cache(false);
    off.clone().build().unwrap();
    assert!(!off.build().unwrap().setup_from_cache());
    assert_eq!(entries(&dir), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn entries_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let Some((builder, dir)) = builder("private") else {
        return;
    };
    builder.build().unwrap();
    let setups = dir.join("setups");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&setups), 0o700);
    for entry in std::fs::read_dir(&setups).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_entry_copied_to_another_setups_name_is_not_used() {
    let Some((builder, dir)) = builder("copied") else {
        return;
    };
    let first = builder.clone().setup("x = 'A'");
    first.clone().build().unwrap();
    let entry_a = only_entry(&dir);
    let second = builder.setup("x = 'B'\ny = 1");
    second.build().unwrap();
    let entry_b = std::fs::read_dir(dir.join("setups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| *p != entry_a)
        .unwrap();
    std::fs::copy(&entry_b, &entry_a).unwrap();
    let mut sandbox = first.build().unwrap();
    assert!(!sandbox.setup_from_cache(), "B's entry was restored for A");
    let result = sandbox.run("print(x, globals().get('y'))").unwrap();
    assert_eq!(common::out(&result), "A None\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_fifo_in_place_of_an_entry_does_not_block_the_build() {
    let Some((builder, dir)) = builder("fifo") else {
        return;
    };
    builder.clone().build().unwrap();
    let entry = only_entry(&dir);
    std::fs::remove_file(&entry).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&entry)
        .status()
        .unwrap();
    assert!(made.success());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sandbox = builder.build().unwrap();
        let _ = done.send(sandbox.setup_from_cache());
    });
    let from_cache = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the build blocked on the FIFO");
    assert!(!from_cache);
    std::fs::remove_dir_all(&dir).unwrap();
}
