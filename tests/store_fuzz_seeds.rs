//! The fuzz targets' seeds (`fuzz/seeds/`) are what `ringmq::store::fuzz::seeds` makes
//! from the current format. `RINGMQ_WRITE_SEEDS=1 cargo test --test store_fuzz_seeds`
//! writes them after a change of the format.

use std::fs;
use std::path::Path;

#[test]
fn seeds_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = std::env::var_os("RINGMQ_WRITE_SEEDS").is_some();
    let mut n = 0;
    for (i, (kind, bytes)) in ringmq::store::fuzz::seeds().into_iter().enumerate() {
        // Every seed feeds both targets: records are a segment's contents too.
        for target in ["store_record", "store_segment"] {
            let path = root.join(target).join(format!("{kind}_{i:02}"));
            if write {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, &bytes).unwrap();
            }
            let on_disk = fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (RINGMQ_WRITE_SEEDS=1 writes it)", path.display())
            });
            assert_eq!(on_disk, bytes, "{} is stale", path.display());
            n += 1;
        }
    }
    assert!(n >= 40, "{n} seeds");
}
