;; The bundled example guest: one function per way a call can end.
;;
;; Every failing function first leaves a "secret" wherever a guest can leave
;; state — memory, a non-exported global, a table slot and, when bit 30 of the
;; secret is set, a grown page, a grown table and dropped passive segments —
;; so a test (or `cleanslate demo`) can show that none of it is visible to
;; the next call.
(module
  (import "cleanslate_demo" "host_op" (func $host_op (param i32) (result i32)))

  (type $binary (func (param i32 i32) (result i32)))
  (type $nullary (func))

  (memory 1 1024)
  ;; Not exported: only the load-time rewrite makes it reachable.
  (global $secret_global (mut i64) (i64.const 0))
  (global $calls (mut i32) (i32.const 0))
  (global $initialised (mut i32) (i32.const 0))
  (table $table 4 funcref)
  (elem (table $table) (i32.const 0) func $add $nop)
  (elem $declared declare func $nop)
  (data $greeting (i32.const 16) "hello from the snapshot")
  (data $passive "passive segment bytes")

  (func $nop (type $nullary))

  ;; ---- success --------------------------------------------------------
  (func $add (export "add") (type $binary)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.add (local.get 0) (local.get 1)))

  ;; A one-time initialisation: its effects belong to the snapshot.
  (func (export "init")
    (global.set $initialised (i32.const 1))
    (i32.store (i32.const 2048) (i32.const 0x1217)))

  ;; ---- state probes (used to check the clean slate) -------------------
  (func (export "read_secret") (result i32) (i32.load (i32.const 1024)))
  (func (export "read_global") (result i64) (global.get $secret_global))
  (func (export "read_calls") (result i32) (global.get $calls))
  (func (export "initialised") (result i32)
    (i32.add (global.get $initialised) (i32.load (i32.const 2048))))
  (func (export "table_slot_3_is_null") (result i32) (ref.is_null (table.get $table (i32.const 3))))
  (func (export "table_size") (result i32) (table.size $table))
  (func (export "memory_pages") (result i32) (memory.size))
  ;; Copies the passive segment into scratch memory; traps if it was dropped.
  (func (export "read_passive") (result i32)
    (memory.init $passive (i32.const 4096) (i32.const 0) (i32.const 4))
    (i32.load (i32.const 4096)))
  ;; Grow by one page and return the first word of the new page (must be 0).
  (func (export "grow_and_read") (result i32)
    (local $old i32)
    (local.set $old (memory.grow (i32.const 1)))
    (if (i32.lt_s (local.get $old) (i32.const 0)) (then (return (i32.const -1))))
    (i32.load (i32.mul (local.get $old) (i32.const 65536))))

  ;; Leave the secret in memory, a non-exported global and a table slot.
  ;; With bit 30 of the secret set, also in a grown page, a grown table, and
  ;; by dropping passive segments: changes only a fresh instance can undo.
  (func $leave_secret (export "leave_secret") (param $secret i32)
    (local $page i32)
    (i32.store (i32.const 1024) (local.get $secret))
    (global.set $secret_global (i64.extend_i32_u (local.get $secret)))
    (table.set $table (i32.const 3) (ref.func $nop))
    (if (i32.and (local.get $secret) (i32.const 0x40000000))
      (then
        (drop (table.grow $table (ref.func $nop) (i32.const 2)))
        (local.set $page (memory.grow (i32.const 1)))
        (if (i32.ge_s (local.get $page) (i32.const 0))
          (then (i32.store (i32.mul (local.get $page) (i32.const 65536)) (local.get $secret))))
        (data.drop $passive)
        (elem.drop $declared)))
    ;; With bit 29, also in a memory grown by two pages (the second one):
    ;; growth alone, which the reset undoes in place.
    (if (i32.and (local.get $secret) (i32.const 0x20000000))
      (then
        (local.set $page (memory.grow (i32.const 2)))
        (if (i32.ge_s (local.get $page) (i32.const 0))
          (then (i32.store
            (i32.mul (i32.add (local.get $page) (i32.const 1)) (i32.const 65536))
            (local.get $secret)))))))

  ;; ---- traps ------------------------------------------------------------
  (func (export "trap_unreachable") (param i32)
    (call $leave_secret (local.get 0)) unreachable)
  (func (export "trap_memory_out_of_bounds") (param i32)
    (call $leave_secret (local.get 0))
    (drop (i32.load (i32.const -1))))
  (func (export "trap_divide_by_zero") (param i32) (result i32)
    (call $leave_secret (local.get 0))
    (i32.div_u (local.get 0) (i32.const 0)))
  (func (export "trap_integer_overflow") (param i32) (result i32)
    (call $leave_secret (local.get 0))
    (i32.div_s (i32.const 0x80000000) (i32.const -1)))
  (func (export "trap_bad_conversion") (param i32) (result i32)
    (call $leave_secret (local.get 0))
    (i32.trunc_f32_s (f32.const nan)))
  (func (export "trap_indirect_type_mismatch") (param i32)
    (call $leave_secret (local.get 0))
    ;; slot 0 holds $add, a (i32 i32) -> i32, called as () -> ().
    (call_indirect $table (type $nullary) (i32.const 0)))
  (func (export "trap_table_out_of_bounds") (param i32)
    (call $leave_secret (local.get 0))
    (call_indirect $table (type $nullary) (i32.const 1000)))
  (func (export "trap_null_reference") (param i32)
    (call $leave_secret (local.get 0))
    ;; slot 2 was never initialised.
    (call_indirect $table (type $nullary) (i32.const 2)))

  ;; ---- resource exhaustion -----------------------------------------------
  (func $recurse (export "recurse") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $recurse (i32.sub (local.get 0) (i32.const 1)))))))
  (func (export "stack_overflow") (param i32) (result i32)
    (call $leave_secret (local.get 0))
    (call $recurse (i32.const -1)))
  ;; Big frames: 48 i64 values live across the recursive call, so each
  ;; frame spills them all to the native stack.
  (func $big_frame (param $depth i32) (result i64)
    (local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)
    (local.set 1 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 3)))
    (local.set 2 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 4)))
    (local.set 3 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 5)))
    (local.set 4 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 6)))
    (local.set 5 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 7)))
    (local.set 6 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 8)))
    (local.set 7 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 9)))
    (local.set 8 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 10)))
    (local.set 9 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 11)))
    (local.set 10 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 12)))
    (local.set 11 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 13)))
    (local.set 12 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 14)))
    (local.set 13 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 15)))
    (local.set 14 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 16)))
    (local.set 15 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 17)))
    (local.set 16 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 18)))
    (local.set 17 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 19)))
    (local.set 18 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 20)))
    (local.set 19 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 21)))
    (local.set 20 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 22)))
    (local.set 21 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 23)))
    (local.set 22 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 24)))
    (local.set 23 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 25)))
    (local.set 24 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 26)))
    (local.set 25 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 27)))
    (local.set 26 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 28)))
    (local.set 27 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 29)))
    (local.set 28 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 30)))
    (local.set 29 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 31)))
    (local.set 30 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 32)))
    (local.set 31 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 33)))
    (local.set 32 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 34)))
    (local.set 33 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 35)))
    (local.set 34 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 36)))
    (local.set 35 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 37)))
    (local.set 36 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 38)))
    (local.set 37 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 39)))
    (local.set 38 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 40)))
    (local.set 39 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 41)))
    (local.set 40 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 42)))
    (local.set 41 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 43)))
    (local.set 42 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 44)))
    (local.set 43 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 45)))
    (local.set 44 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 46)))
    (local.set 45 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 47)))
    (local.set 46 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 48)))
    (local.set 47 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 49)))
    (local.set 48 (i64.mul (i64.extend_i32_u (local.get $depth)) (i64.const 50)))
    (if (i32.eqz (local.get $depth)) (then (return (local.get 1))))
    (drop (call $big_frame (i32.sub (local.get $depth) (i32.const 1))))
    (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (i64.add (local.get 1) (local.get 2)) (local.get 3)) (local.get 4)) (local.get 5)) (local.get 6)) (local.get 7)) (local.get 8)) (local.get 9)) (local.get 10)) (local.get 11)) (local.get 12)) (local.get 13)) (local.get 14)) (local.get 15)) (local.get 16)) (local.get 17)) (local.get 18)) (local.get 19)) (local.get 20)) (local.get 21)) (local.get 22)) (local.get 23)) (local.get 24)) (local.get 25)) (local.get 26)) (local.get 27)) (local.get 28)) (local.get 29)) (local.get 30)) (local.get 31)) (local.get 32)) (local.get 33)) (local.get 34)) (local.get 35)) (local.get 36)) (local.get 37)) (local.get 38)) (local.get 39)) (local.get 40)) (local.get 41)) (local.get 42)) (local.get 43)) (local.get 44)) (local.get 45)) (local.get 46)) (local.get 47)) (local.get 48)))
  (func (export "stack_overflow_big_frames") (param i32) (result i64)
    (call $leave_secret (local.get 0))
    (call $big_frame (i32.const 100000000)))
  ;; Grow until refused (-1), then fail: an out-of-memory call.
  (func (export "out_of_memory") (param i32)
    (call $leave_secret (local.get 0))
    (loop $more
      (br_if $more (i32.ge_s (memory.grow (i32.const 16)) (i32.const 0))))
    unreachable)
  ;; Growth the limit allows, a secret in the grown pages, then a trap.
  (func (export "grow_then_trap") (param i32)
    (local $old i32)
    (call $leave_secret (local.get 0))
    (local.set $old (memory.grow (i32.const 2)))
    (i32.store (i32.mul (local.get $old) (i32.const 65536)) (local.get 0))
    unreachable)
  (func (export "spin") (param i32)
    (call $leave_secret (local.get 0))
    (loop $forever (br $forever)))

  ;; ---- host functions -----------------------------------------------------
  ;; host_op(0) succeeds with 7, host_op(1) errors, host_op(2) panics.
  (func (export "call_host") (param $secret i32) (param $mode i32) (result i32)
    (call $leave_secret (local.get $secret))
    (call $host_op (local.get $mode)))
)
