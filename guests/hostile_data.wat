;; A data-ABI guest (docs/ABI.md) that behaves or misbehaves on request:
;; the tests use it to prove that no pointer, length or record a guest
;; returns can make the host read outside guest memory, allocate without
;; bound or crash, and that the sandbox is clean after each of these calls.
;;
;; Every exported data function first leaves a secret behind (memory at
;; 0x100, the global $secret, and the bump allocator's position) so the
;; tests can check that the reset took it away.
(module
  (import "kv" "get" (func $kv_get (param i32 i32) (result i64)))
  (import "cleanslate" "call_host" (func $call_host (param i32 i32 i32 i32) (result i64)))
  (import "cleanslate" "panic" (func $panic (param i32 i32)))
  (import "cleanslate" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1 64)
  (global $heap (mut i32) (i32.const 0x1000))
  (global $secret (mut i32) (i32.const 0))
  (data (i32.const 0x200) "kv.get")
  (data (i32.const 0x210) "the guest gave up")
  (data (i32.const 0x230) "nope.missing")

  ;; Bump allocator. Lengths 1313 and 1717 are refused in two ways, so tests
  ;; can reach both failure paths.
  (func $alloc (export "cleanslate_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (if (i32.eq (local.get $len) (i32.const 1313)) (then (return (i32.const 0))))
    (if (i32.eq (local.get $len) (i32.const 1717)) (then (return (i32.const 0xFFFF_FFF0))))
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7))
                               (i32.const -8)))
    ;; grow when the heap runs past the end
    (block $fits
      (br_if $fits (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $fits (i32.ne
        (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $heap)
                                                 (i32.mul (memory.size) (i32.const 65536)))
                                        (i32.const 16))
                              (i32.const 1)))
        (i32.const -1)))
      (return (i32.const 0)))
    (local.get $ptr))

  (func $leave_secret
    (i32.store (i32.const 0x100) (i32.const 0x5EC2E7))
    (global.set $secret (i32.const 0x5EC2E7)))

  ;; A result record {status, ptr, len} at 0x20.
  (func $record (param $status i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0x20) (local.get $status))
    (i32.store (i32.const 0x24) (local.get $ptr))
    (i32.store (i32.const 0x28) (local.get $len))
    (i32.const 0x20))

  (func (export "echo") (param $ptr i32) (param $len i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 0) (local.get $ptr) (local.get $len)))

  ;; Output = input with every byte turned to upper case ASCII, in a fresh
  ;; allocation.
  (func (export "upper") (param $ptr i32) (param $len i32) (result i32)
    (local $out i32) (local $i i32) (local $c i32)
    (call $leave_secret)
    (local.set $out (call $alloc (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (local.set $c (i32.sub (local.get $c) (i32.const 32)))))
        (i32.store8 (i32.add (local.get $out) (local.get $i)) (local.get $c))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $record (i32.const 0) (local.get $out) (local.get $len)))

  ;; Reports the input as its error message.
  (func (export "fail") (param $ptr i32) (param $len i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 1) (local.get $ptr) (local.get $len)))

  (func (export "bad_status") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 7) (i32.const 0) (i32.const 0)))

  (func (export "output_past_the_end") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 0) (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 4))
                  (i32.const 8)))

  (func (export "huge_length") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 0) (i32.const 0) (i32.const -1)))

  (func (export "pointer_wraps") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 0) (i32.const -16) (i32.const 32)))

  (func (export "record_past_the_end") (param i32 i32) (result i32)
    (call $leave_secret)
    (i32.const -8))

  ;; Output of 4096 bytes: over a 1 KiB output limit.
  (func (export "big_output") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $record (i32.const 0) (i32.const 0) (i32.const 4096)))

  ;; Passes its input to kv.get (a direct bytes import) and returns the answer.
  (func (export "lookup") (param $ptr i32) (param $len i32) (result i32)
    (local $packed i64)
    (call $leave_secret)
    (local.set $packed (call $kv_get (local.get $ptr) (local.get $len)))
    (call $record (i32.const 0)
      (i32.wrap_i64 (local.get $packed))
      (i32.wrap_i64 (i64.shr_u (local.get $packed) (i64.const 32)))))

  ;; The same through the generic dispatcher, by name.
  (func (export "lookup_by_name") (param $ptr i32) (param $len i32) (result i32)
    (local $packed i64)
    (call $leave_secret)
    (local.set $packed (call $call_host (i32.const 0x200) (i32.const 6) (local.get $ptr) (local.get $len)))
    (call $record (i32.const 0)
      (i32.wrap_i64 (local.get $packed))
      (i32.wrap_i64 (i64.shr_u (local.get $packed) (i64.const 32)))))

  (func (export "call_missing_host_fn") (param i32 i32) (result i32)
    (call $leave_secret)
    (drop (call $call_host (i32.const 0x230) (i32.const 12) (i32.const 0) (i32.const 0)))
    (call $record (i32.const 0) (i32.const 0) (i32.const 0)))

  (func (export "host_input_past_the_end") (param i32 i32) (result i32)
    (call $leave_secret)
    (drop (call $kv_get (i32.const 0xFFF0) (i32.const 0x100)))
    (call $record (i32.const 0) (i32.const 0) (i32.const 0)))

  (func (export "host_input_huge") (param i32 i32) (result i32)
    (call $leave_secret)
    (drop (call $kv_get (i32.const 0) (i32.const 0x7FFF_FFFF)))
    (call $record (i32.const 0) (i32.const 0) (i32.const 0)))

  (func (export "host_name_past_the_end") (param i32 i32) (result i32)
    (call $leave_secret)
    (drop (call $call_host (i32.const -2) (i32.const 6) (i32.const 0) (i32.const 0)))
    (call $record (i32.const 0) (i32.const 0) (i32.const 0)))

  (func (export "host_name_huge") (param i32 i32) (result i32)
    (call $leave_secret)
    (drop (call $call_host (i32.const 0x200) (i32.const -1) (i32.const 0) (i32.const 0)))
    (call $record (i32.const 0) (i32.const 0) (i32.const 0)))

  (func (export "panics") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $log (i32.const 2) (i32.const 0x210) (i32.const 17))
    (call $panic (i32.const 0x210) (i32.const 17))
    unreachable)

  (func (export "panic_message_past_the_end") (param i32 i32) (result i32)
    (call $leave_secret)
    (call $panic (i32.const 0xFFFF) (i32.const 2))
    unreachable)

  ;; Grows memory (by allocating) before returning its input.
  (func (export "grow_then_echo") (param $ptr i32) (param $len i32) (result i32)
    (drop (call $alloc (i32.const 0x30000)))
    (call $leave_secret)
    (call $record (i32.const 0) (local.get $ptr) (local.get $len)))

  (func (export "not_a_data_function") (param i64) (result i32) (i32.const 0))

  (func (export "read_secret") (result i32)
    (i32.add (i32.load (i32.const 0x100)) (global.get $secret)))
)
