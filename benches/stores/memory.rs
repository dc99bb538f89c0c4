//! The memory store: `MemoryStore::new()`, with no floor (there is no database).

use stripe_webhooks::MemoryStore;

use crate::{Bench, Row, StorePair, STORE};

pub(crate) fn run(b: &Bench) -> Vec<Row> {
    println!("memory: MemoryStore::new() (no floor: there is no database)");
    b.rows("memory", &[], |conc, best| {
        let m = b.drive(StorePair(MemoryStore::new()), conc);
        best.add(STORE, "MemoryStore", conc, m);
        Ok(())
    })
}
