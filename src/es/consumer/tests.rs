use super::*;

#[test]
fn names_that_could_name_another_names_file_are_refused() {
    for ok in [
        "b", "b.x", "b.locks", "lock", "tmp", "b-lock", "b.tmp1", "a.lock.b", "parked", "b_tmp",
    ] {
        check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "b.lock",
        "b.tmp",
        "b.parked",
        "b.LOCK",
        "b.Tmp",
        "x.y.parked",
        ".lock",
        "b~v1",
        "b~serving",
        "",
        ".b",
        "b/c",
    ] {
        assert!(matches!(check_name(bad), Err(Error::InvalidArgument(_))), "{bad}");
    }
    let e = check_name("b.lock").unwrap_err().to_string();
    assert!(e.contains("must not end in") && e.contains("24.1"), "{e}");
}
