;; A WASI guest for the tests of async callers and of `serve`.
;; `say(n)` writes "say N\n" to stdout and "err N\n" to stderr with
;; `fd_write`, leaving the text in memory and counting calls in a global; it
;; returns the count (1 from a clean slate). `say_and_trap(n)` does the same,
;; then traps; `quit(n)` does the same, then exits with code n. `nap()` sleeps
;; 1 ms through `poll_oneoff`. `echo_stdin()` copies stdin to stdout with
;; `fd_read`. `leftovers()` is non-zero when anything of an earlier call is
;; visible.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; Writes "say N\n" and "err N\n"; the text ends at 211.
  (func $say (param $n i32) (result i32) (local $pos i32) (local $len i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (local.set $pos (i32.const 210))
    (i32.store8 (i32.const 210) (i32.const 10))
    (loop $digit
      (local.set $pos (i32.sub (local.get $pos) (i32.const 1)))
      (i32.store8 (local.get $pos)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (local.set $pos (i32.sub (local.get $pos) (i32.const 4)))
    (local.set $len (i32.sub (i32.const 211) (local.get $pos)))
    (i32.store (local.get $pos) (i32.const 0x20796173)) ;; "say "
    (call $write (i32.const 1) (local.get $pos) (local.get $len))
    (i32.store (local.get $pos) (i32.const 0x20727265)) ;; "err "
    (call $write (i32.const 2) (local.get $pos) (local.get $len))
    (global.get $calls))
  (func (export "say") (param $n i32) (result i32) (call $say (local.get $n)))
  (func (export "say_and_trap") (param $n i32)
    (drop (call $say (local.get $n)))
    unreachable)
  (func (export "quit") (param $n i32)
    (drop (call $say (local.get $n)))
    (call $proc_exit (local.get $n)))
  (func (export "nap") (result i32)
    ;; One relative clock subscription of 1 ms (monotonic clock).
    (i64.store (i32.const 1024) (i64.const 0))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.const 1000000))
    (i64.store (i32.const 1056) (i64.const 0))
    (i32.store16 (i32.const 1064) (i32.const 0))
    (call $poll_oneoff (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 2100)))
  (func (export "echo_stdin") (result i32) (local $read i32)
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 1024))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    (local.set $read (i32.load (i32.const 24)))
    (call $write (i32.const 1) (i32.const 4096) (local.get $read))
    (local.get $read))
  (func (export "leftovers") (result i32)
    (i32.or (global.get $calls)
      (i32.or (i32.load (i32.const 0)) (i32.load (i32.const 208))))))
