//! Compile-fail tests for `#[derive(Hookable)]`, `hook!` and typed paths: each case's compiler
//! output is checked in next to it (`tests/ui/*.stderr`). Regenerate with
//! `TRYBUILD=overwrite cargo test -p tdhook-derive --test trybuild`, then read every `.stderr`.

#[test]
fn ui() {
    // One `TestCases` so the dependencies compile once.
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/enum.rs");
    t.compile_fail("tests/ui/union.rs");
    t.compile_fail("tests/ui/unknown_key.rs");
    t.compile_fail("tests/ui/rename_invalid.rs");
    t.compile_fail("tests/ui/skip_rename.rs");
    t.compile_fail("tests/ui/not_hookable.rs");
    t.compile_fail("tests/ui/hook_misspelt_field.rs");
    t.compile_fail("tests/ui/hook_skipped_field.rs");
    t.compile_fail("tests/ui/path_misspelt.rs");
    t.compile_fail("tests/ui/duplicate_path.rs");
    t.compile_fail("tests/ui/misroute.rs");
    t.compile_fail("tests/ui/owner_mismatch.rs");
    t.pass("tests/ui/pass_forms.rs");
}
