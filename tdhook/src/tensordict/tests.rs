//! TensorDict tests: keys, batch sizes, structure, views.
use super::*;

fn t(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

fn ar(shape: &[usize], start: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(start, start + n as f32, &Device::Cpu)
        .unwrap()
        .reshape(shape)
        .unwrap()
}

fn key_strings(td: &TensorDict, leaves_only: bool) -> Vec<String> {
    td.keys(leaves_only).iter().map(Key::to_string).collect()
}

#[test]
fn nested_insert_get_remove() {
    let mut td = TensorDict::new(vec![2]);
    assert!(td.insert("x", t(&[2, 3])).unwrap().is_none());
    td.insert(("cache", "transformer.h.0.mlp"), t(&[2, 4]))
        .unwrap();
    td.insert(["cache", "attn", "k"], t(&[2, 1, 5])).unwrap();

    assert_eq!(td.len(), 2);
    assert_eq!(
        td.get(("cache", "transformer.h.0.mlp")).unwrap().dims(),
        &[2, 4]
    );
    assert_eq!(
        td.tensor(["cache", "attn", "k"]).unwrap().dims(),
        &[2, 1, 5]
    );
    // Intermediate sub-dicts get the parent's batch size.
    assert_eq!(td.get_dict("cache").unwrap().batch_size(), &[2]);
    assert_eq!(td.get_dict(("cache", "attn")).unwrap().batch_size(), &[2]);
    assert!(td.contains("cache"));
    assert!(td.get("cache").is_none(), "a sub-dict is not a tensor");
    assert!(td.entry("cache").unwrap().is_dict());
    assert!(!td.contains(("x", "y")));
    assert!(!td.contains("cache/attn"), "invalid key is simply absent");

    // Replacing returns the old tensor and keeps the position.
    let old = td.insert("x", ar(&[2, 3], 1.0)).unwrap().unwrap();
    assert_eq!(old.dims(), &[2, 3]);
    assert_eq!(key_strings(&td, false)[0], "x");

    let removed = td.remove(("cache", "attn", "k")).unwrap();
    assert_eq!(removed.as_tensor().unwrap().dims(), &[2, 1, 5]);
    assert!(!td.contains(("cache", "attn", "k")));
    assert!(td.contains(("cache", "attn")), "intermediate dict is kept");
    assert!(td.remove(("cache", "attn", "k")).is_none());
    assert!(td.remove("nope").is_none());

    // get_dict_mut inserts under the sub-dict's own batch rules.
    let cache = td.get_dict_mut("cache").unwrap();
    cache.insert("z", t(&[2])).unwrap();
    assert!(cache.insert("bad", t(&[3])).is_err());
    assert!(td.contains(("cache", "z")));
}

#[test]
fn insertion_order_is_preserved() {
    let mut td = TensorDict::unbatched();
    for name in ["zeta", "alpha", "mid"] {
        td.insert(name, t(&[1])).unwrap();
    }
    td.insert(("b", "y"), t(&[1])).unwrap();
    td.insert(("b", "a"), t(&[1])).unwrap();
    td.insert("aa", t(&[1])).unwrap();
    assert_eq!(
        key_strings(&td, true),
        ["zeta", "alpha", "mid", "b/y", "b/a", "aa"]
    );
    assert_eq!(
        key_strings(&td, false),
        ["zeta", "alpha", "mid", "b", "b/y", "b/a", "aa"]
    );
    td.remove("alpha");
    assert_eq!(key_strings(&td, true), ["zeta", "mid", "b/y", "b/a", "aa"]);
    let leaf_names: Vec<String> = td.leaves().map(|(k, _)| k.to_string()).collect();
    assert_eq!(leaf_names, ["zeta", "mid", "b/y", "b/a", "aa"]);
    let top: Vec<&str> = td.iter().map(|(k, _)| k).collect();
    assert_eq!(top, ["zeta", "mid", "b", "aa"]);
}

#[test]
fn batch_mismatch_error_names_key_shape_and_batch() {
    let mut td = TensorDict::new(vec![2]);
    let err = td.insert("input", t(&[3, 5])).unwrap_err();
    assert!(matches!(err, TensorDictError::BatchMismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("`input`"), "{msg}");
    assert!(msg.contains("[3, 5]"), "{msg}");
    assert!(msg.contains("batch size is [2]"), "{msg}");
    assert!(
        msg.contains("leading dims must equal the batch size"),
        "{msg}"
    );
    assert!(td.is_empty(), "failed insert leaves the dict unchanged");

    // Too few dims is a mismatch too.
    let mut td = TensorDict::new(vec![2, 3]);
    assert!(td.insert("s", t(&[2])).is_err());
    // A failed nested insert does not create intermediate dicts.
    let err = td.insert(("a", "b"), t(&[2, 4])).unwrap_err().to_string();
    assert!(err.contains("`a/b`"), "{err}");
    assert!(!td.contains("a"));
    td.insert(("a", "b"), t(&[2, 3, 7])).unwrap();
}

#[test]
fn unbatched_sub_dict_accepts_any_shape() {
    let mut td = TensorDict::new(vec![2]);
    td.insert_dict("rotary", TensorDict::unbatched()).unwrap();
    td.insert(("rotary", "cos"), t(&[1, 7, 4])).unwrap();
    td.insert(("rotary", "scalar"), t(&[])).unwrap();
    assert_eq!(td.get_dict("rotary").unwrap().batch_size(), &[] as &[usize]);
    // Nested inserts under an unbatched dict create unbatched dicts.
    td.insert(("rotary", "deep", "x"), t(&[9])).unwrap();
    assert_eq!(td.get_dict(("rotary", "deep")).unwrap().batch_dims(), 0);
    // ...while the batched root still checks.
    assert!(td.insert("cos", t(&[1, 7, 4])).is_err());

    // Sub-dict batch sizes must extend the parent's (or be empty).
    td.insert_dict("longer", TensorDict::new(vec![2, 5]))
        .unwrap();
    let err = td
        .insert_dict("other", TensorDict::new(vec![3]))
        .unwrap_err();
    assert!(matches!(err, TensorDictError::SubDictBatch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`other`") && msg.contains("[3]") && msg.contains("[2]"),
        "{msg}"
    );
    assert!(!td.contains("other"));
    assert!(td.insert(("longer", "x"), t(&[2, 4])).is_err());
    td.insert(("longer", "x"), t(&[2, 5, 1])).unwrap();
}

#[test]
fn tensor_errors_list_available_keys() {
    let mut td = TensorDict::unbatched();
    td.insert(("cache", "transformer.h.0.mlp"), t(&[1]))
        .unwrap();
    td.insert(("cache", "transformer.h.1.mlp"), t(&[1]))
        .unwrap();
    td.insert("logits", t(&[1])).unwrap();

    let err = td.tensor(("cache", "transformer.h.2.mlp")).unwrap_err();
    match &err {
        TensorDictError::KeyNotFound { key, available } => {
            assert_eq!(key, "cache/transformer.h.2.mlp");
            assert_eq!(
                available,
                &["cache/transformer.h.0.mlp", "cache/transformer.h.1.mlp"]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("`cache/transformer.h.0.mlp`"),
        "{err}"
    );

    let err = td.tensor("nope").unwrap_err().to_string();
    assert!(
        err.contains("`logits`") && err.contains("`cache/transformer.h.1.mlp`"),
        "{err}"
    );

    let err = td.tensor("cache").unwrap_err();
    assert!(
        matches!(err, TensorDictError::NotATensor { ref key } if key == "cache"),
        "{err}"
    );
    let err = td.tensor(("logits", "x")).unwrap_err();
    assert!(
        matches!(err, TensorDictError::NotADict { ref key } if key == "logits"),
        "{err}"
    );
    let err = td.tensor("cache/x").unwrap_err();
    assert!(matches!(err, TensorDictError::InvalidKey { .. }), "{err}");

    // Many keys: the message is truncated.
    let mut big = TensorDict::unbatched();
    for i in 0..25 {
        big.insert(format!("k{i}"), t(&[1])).unwrap();
    }
    let err = big.tensor("missing").unwrap_err().to_string();
    assert!(err.contains("`k9`") && !err.contains("`k10`"), "{err}");
    assert!(err.contains("and 15 more"), "{err}");
}

#[test]
fn structural_conflicts_are_errors() {
    let mut td = TensorDict::unbatched();
    td.insert("a", t(&[1])).unwrap();
    td.insert(("d", "x"), t(&[1])).unwrap();
    let err = td.insert(("a", "b"), t(&[1])).unwrap_err();
    assert!(
        matches!(err, TensorDictError::NotADict { ref key } if key == "a"),
        "{err}"
    );
    let err = td.insert("d", t(&[1])).unwrap_err();
    assert!(
        matches!(err, TensorDictError::NotATensor { ref key } if key == "d"),
        "{err}"
    );
    let err = td.insert_dict("a", TensorDict::unbatched()).unwrap_err();
    assert!(matches!(err, TensorDictError::NotADict { .. }), "{err}");
    assert!(td.get("a").is_some() && td.get(("d", "x")).is_some());
    // Invalid keys are rejected by mutators.
    for bad in [
        Key::from(""),
        Key::from("a/b"),
        Key::from(Vec::<String>::new()),
    ] {
        let err = td.insert(&bad, t(&[1])).unwrap_err();
        assert!(matches!(err, TensorDictError::InvalidKey { .. }), "{err}");
    }
    assert_eq!(td.len(), 2);
}

#[test]
fn select_and_exclude_keep_nesting_and_batch_sizes() {
    let mut td = TensorDict::new(vec![2]);
    td.insert("x", t(&[2])).unwrap();
    td.insert("y", t(&[2, 2])).unwrap();
    td.insert_dict("rot", TensorDict::unbatched()).unwrap();
    td.insert(("rot", "cos"), t(&[1, 3])).unwrap();
    td.insert(("rot", "sin"), t(&[1, 3])).unwrap();
    td.insert(("cache", "h.0"), t(&[2, 4])).unwrap();
    td.insert(("cache", "h.1"), t(&[2, 4])).unwrap();

    let s = td
        .select([
            Key::from(("rot", "sin")),
            Key::from("x"),
            Key::from("cache"),
        ])
        .unwrap();
    assert_eq!(s.batch_size(), &[2]);
    assert_eq!(
        key_strings(&s, true),
        ["rot/sin", "x", "cache/h.0", "cache/h.1"]
    );
    assert_eq!(s.get_dict("rot").unwrap().batch_size(), &[] as &[usize]);
    assert!(!s.contains(("rot", "cos")));

    let err = td.select(["x", "missing"]).unwrap_err();
    assert!(matches!(err, TensorDictError::KeyNotFound { .. }), "{err}");

    let e = td.exclude([
        Key::from("y"),
        Key::from(("cache", "h.0")),
        Key::from("nope"),
    ]);
    assert_eq!(
        key_strings(&e, true),
        ["x", "rot/cos", "rot/sin", "cache/h.1"]
    );
    assert_eq!(
        key_strings(&td, true).len(),
        6,
        "exclude does not modify the source"
    );
}

#[test]
fn apply_to_device_update_and_allclose() {
    let mut td = TensorDict::new(vec![2]);
    td.insert("a", ar(&[2, 3], 0.0)).unwrap();
    td.insert_dict("u", TensorDict::unbatched()).unwrap();
    td.insert(("u", "b"), ar(&[4], 10.0)).unwrap();

    let doubled = td.apply(|t| t * 2.0).unwrap();
    assert_eq!(
        doubled.tensor("a").unwrap().to_vec2::<f32>().unwrap()[1],
        [6.0, 8.0, 10.0]
    );
    assert_eq!(doubled.get_dict("u").unwrap().batch_dims(), 0);
    assert!(!doubled.allclose(&td, 1e-6, 1e-6).unwrap());
    let halved = doubled.apply(|t| t / 2.0).unwrap();
    assert!(halved.allclose(&td, 0.0, 0.0).unwrap());

    let err = td.apply(|t| t.flatten_all()).unwrap_err();
    assert!(
        matches!(err, TensorDictError::BatchMismatch { .. }),
        "{err}"
    );
    let err = td.apply(|t| t.reshape(7)).unwrap_err().to_string();
    assert!(err.contains("while applying to `a`"), "{err}");

    let moved = td.to_device(&Device::Cpu).unwrap();
    assert!(moved.allclose(&td, 0.0, 0.0).unwrap());

    let mut other = TensorDict::new(vec![2]);
    other.insert("a", ar(&[2, 3], 100.0)).unwrap();
    other.insert_dict("u", TensorDict::unbatched()).unwrap();
    other.insert(("u", "c"), t(&[9])).unwrap();
    other
        .insert_dict("empty", TensorDict::new(vec![2, 1]))
        .unwrap();
    let mut merged = td.clone();
    merged.update(&other).unwrap();
    assert_eq!(
        key_strings(&merged, false),
        ["a", "u", "u/b", "u/c", "empty"]
    );
    assert_eq!(merged.get_dict("empty").unwrap().batch_size(), &[2, 1]);
    assert_eq!(
        merged.tensor("a").unwrap().to_vec2::<f32>().unwrap()[0][0],
        100.0
    );

    // A failing update leaves the dict unchanged.
    let mut bad = TensorDict::unbatched();
    bad.insert("new", t(&[1])).unwrap();
    bad.insert("z", t(&[5])).unwrap();
    let mut target = td.clone();
    assert!(target.update(&bad).is_err());
    assert!(!target.contains("new"));

    // allclose: tolerances, structure and batch sizes matter, dtype does not.
    let mut near = td.clone();
    near.insert("a", (ar(&[2, 3], 0.0) + 1e-3).unwrap())
        .unwrap();
    assert!(!near.allclose(&td, 0.0, 1e-4).unwrap());
    assert!(near.allclose(&td, 0.0, 1e-2).unwrap());
    let as_f64 = td.apply(|t| t.to_dtype(DType::F64)).unwrap();
    assert!(as_f64.allclose(&td, 0.0, 0.0).unwrap());
    assert!(!td.exclude(["a"]).allclose(&td, 0.0, 0.0).unwrap());
    let mut extra = td.clone();
    extra.insert_dict("e", TensorDict::unbatched()).unwrap();
    assert!(!extra.allclose(&td, 0.0, 0.0).unwrap());
    assert!(!td.allclose(&extra, 0.0, 0.0).unwrap());
    let mut rebatched = TensorDict::new(vec![2]);
    rebatched.insert("a", ar(&[2, 3], 0.0)).unwrap();
    rebatched.insert(("u", "b"), ar(&[4], 10.0)).unwrap_err();
    rebatched
        .insert_dict("u", TensorDict::new(vec![2]))
        .unwrap();
    assert!(!rebatched.allclose(&td, 0.0, 0.0).unwrap());
}

#[test]
fn display_shows_tree() {
    let mut td = TensorDict::new(vec![2]);
    td.insert(("cache", "h.0"), t(&[2, 4])).unwrap();
    let s = td.to_string();
    assert!(s.starts_with("TensorDict(batch_size=[2])"), "{s}");
    assert!(s.contains("  cache: TensorDict(batch_size=[2])"), "{s}");
    assert!(s.contains("    h.0: [2, 4] F32"), "{s}");
}
