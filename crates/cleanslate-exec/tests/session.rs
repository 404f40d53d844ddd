//! Sessions: runs that share state until the session ends, then the clean
//! slate — after a finish, a drop, or a run that did not complete.

mod common;

use std::time::Duration;

use cleanslate_exec::{CodeSandbox, ExecErrorKind, RunErrorKind};

/// What a run can see of earlier runs.
const PROBE: &str = r#"
import os, sys, builtins
print(sorted(k for k in globals() if not k.startswith("_") and k not in ("os", "sys", "builtins")),
      "fractions" in sys.modules, hasattr(builtins, "answer"), sorted(os.listdir("/tmp")), os.environ.get("SEEN"))
"#;

fn sandbox() -> Option<CodeSandbox> {
    Some(
        common::builder()?
            .setup("base = 1")
            .timeout(Duration::from_secs(2))
            .output_files(true)
            .setup_cache(false)
            .build()
            .expect("the sandbox builds"),
    )
}

const LEAVE: &str = r#"
import builtins, fractions, os
rows = [3, 1, 2]
builtins.answer = 42
os.environ["SEEN"] = "yes"
open("/tmp/kept", "w").write("x")
open("/output/out.txt", "w").write("file")
"#;

#[test]
fn runs_in_a_session_share_state_and_the_session_end_resets_it() {
    let Some(mut sandbox) = sandbox() else { return };
    let clean = common::out(&sandbox.run(PROBE).unwrap());
    for finish in [true, false] {
        let mut session = sandbox.session();
        let first = session.run(LEAVE).unwrap();
        assert!(first.ok(), "{}", common::err(&first));
        assert!(first.reset.is_none(), "no reset inside a session");
        assert_eq!(first.files.len(), 1, "files are handed back per run");
        let second = session
            .run("print(sorted(rows), answer, open('/tmp/kept').read())")
            .unwrap();
        assert_eq!(
            common::out(&second),
            "[1, 2, 3] 42 x\n",
            "{}",
            common::err(&second)
        );
        assert!(
            second.files.is_empty(),
            "/output was emptied after the first run"
        );
        // An exception completes the run: the session goes on.
        let failed = session.run("raise ValueError('no')").unwrap();
        assert_eq!(
            failed.exit_code,
            Some(1),
            "{:?} {}",
            failed.error,
            common::err(&failed)
        );
        assert_eq!(common::out(&session.run("print(rows[0])").unwrap()), "3\n");
        if finish {
            session.finish().unwrap();
        } else {
            drop(session);
        }
        assert_eq!(
            common::out(&sandbox.run(PROBE).unwrap()),
            clean,
            "finish: {finish}"
        );
    }
}

#[test]
fn a_run_that_does_not_complete_ends_the_session_and_the_slate_is_clean() {
    let Some(mut sandbox) = sandbox() else { return };
    let clean = common::out(&sandbox.run(PROBE).unwrap());
    let mut session = sandbox.session();
    session.run(LEAVE).unwrap();
    let spin = session.run("while True: pass").unwrap();
    assert_eq!(
        spin.error.as_ref().map(|e| e.kind),
        Some(RunErrorKind::Timeout)
    );
    let err = session.run("print(rows)").unwrap_err();
    assert_eq!(err.kind(), ExecErrorKind::SessionEnded, "{err}");
    assert!(err.to_string().contains("timeout"), "{err}");
    session.finish().unwrap();
    assert_eq!(common::out(&sandbox.run(PROBE).unwrap()), clean);
    // And a new session works.
    let mut session = sandbox.session();
    assert_eq!(
        common::out(&session.run("x = 2\nprint(x + base)").unwrap()),
        "3\n"
    );
}
