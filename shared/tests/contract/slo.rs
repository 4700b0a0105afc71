//! Behaviour every `SloStore` adapter must show (SQLite, PostgreSQL): SLOs
//! read back as created, updates keep the history, deletes take it along,
//! and samples are stored once, read in order and pruned by age. Each check
//! works on SLOs of its own, so the suite can share one real database.
//!
//! Times are whole microseconds: the precision both SQL stores keep.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use lizards_shared::slo::{Aggregation, Comparison, Sample, SloSpec, SloStore, SloStoreError};

use crate::helpers::unique;

pub async fn run_all(store: &dyn SloStore) {
    created_slo_reads_back_and_is_listed(store).await;
    update_replaces_the_spec_and_keeps_the_history(store).await;
    deleting_an_slo_deletes_its_history(store).await;
    samples_are_stored_once_in_order_and_pruned(store).await;
    names_are_unique(store).await;
}

pub async fn names_are_unique(store: &dyn SloStore) {
    let name = unique("taken");
    let first = store.create_slo(&spec(&name), now()).await.unwrap();
    let again = store.create_slo(&spec(&name), now()).await;
    assert!(matches!(again, Err(SloStoreError::NameTaken)), "{again:?}");
    let other = store.create_slo(&spec(&unique("other")), now()).await.unwrap();
    let renamed = store.update_slo(other.id, &spec(&name), now()).await;
    assert!(matches!(renamed, Err(SloStoreError::NameTaken)), "{renamed:?}");
    assert_eq!(store.slo(first.id).await.unwrap().unwrap().spec.name, name);
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

fn spec(name: &str) -> SloSpec {
    SloSpec {
        name: name.to_string(),
        metric: "lizards_e2e_latency_seconds".into(),
        labels: BTreeMap::from([("service".into(), "provider".into()), ("quote".into(), "it's \"odd\"".into())]),
        aggregation: Aggregation::P99,
        comparison: Comparison::Below,
        threshold: 0.01,
        window_minutes: 60,
    }
}

pub async fn created_slo_reads_back_and_is_listed(store: &dyn SloStore) {
    let at = now();
    let created = store.create_slo(&spec(&unique("latency")), at).await.expect("created");
    assert_eq!((created.created_at, created.updated_at), (at, at));
    assert_eq!(store.slo(created.id).await.unwrap(), Some(created.clone()));
    assert!(store.slos().await.unwrap().contains(&created));
    assert_eq!(store.slo(created.id + 1_000_000).await.unwrap(), None);
}

pub async fn update_replaces_the_spec_and_keeps_the_history(store: &dyn SloStore) {
    let at = now();
    let created = store.create_slo(&spec(&unique("update")), at).await.unwrap();
    store.record_samples(&[Sample::new(&created, at, Some(0.5))]).await.unwrap();
    let mut changed = spec(&unique("updated"));
    changed.aggregation = Aggregation::Rate5m;
    changed.comparison = Comparison::Above;
    changed.labels.clear();
    let later = at + Duration::seconds(5);
    let updated = store.update_slo(created.id, &changed, later).await.unwrap().expect("exists");
    assert_eq!((updated.spec.clone(), updated.created_at, updated.updated_at), (changed.clone(), at, later));
    assert_eq!(store.samples(created.id, at).await.unwrap().len(), 1);
    assert_eq!(store.update_slo(created.id + 1_000_000, &changed, later).await.unwrap(), None);
}

pub async fn deleting_an_slo_deletes_its_history(store: &dyn SloStore) {
    let at = now();
    let created = store.create_slo(&spec(&unique("delete")), at).await.unwrap();
    store.record_samples(&[Sample::new(&created, at, Some(0.5))]).await.unwrap();
    assert!(store.delete_slo(created.id).await.unwrap());
    assert!(!store.delete_slo(created.id).await.unwrap());
    assert_eq!(store.slo(created.id).await.unwrap(), None);
    assert!(store.samples(created.id, at - Duration::hours(1)).await.unwrap().is_empty());
    // A late evaluation of the deleted SLO is dropped, not an error.
    store.record_samples(&[Sample::new(&created, at + Duration::seconds(1), Some(0.1))]).await.expect("ignored");
    assert!(store.samples(created.id, at - Duration::hours(1)).await.unwrap().is_empty());
}

pub async fn samples_are_stored_once_in_order_and_pruned(store: &dyn SloStore) {
    let at = now() - Duration::hours(10);
    let slo = store.create_slo(&spec(&unique("samples")), at).await.unwrap();
    let samples = [
        Sample::new(&slo, at + Duration::seconds(30), None),
        Sample::new(&slo, at, Some(0.005)),
        Sample::new(&slo, at + Duration::seconds(15), Some(0.02)),
    ];
    store.record_samples(&samples).await.unwrap();
    // The same time again is kept as first stored.
    store.record_samples(&[Sample::new(&slo, at, Some(9.0))]).await.unwrap();
    let stored = store.samples(slo.id, at).await.unwrap();
    assert_eq!(stored, vec![samples[1], samples[2], samples[0]]);
    assert_eq!(stored[0].met, Some(true));
    assert_eq!(stored[1].met, Some(false));
    assert_eq!(stored[2].met, None);
    assert_eq!(store.samples(slo.id, at + Duration::seconds(10)).await.unwrap().len(), 2);

    let pruned = store.prune_samples(at + Duration::seconds(20)).await.unwrap();
    assert!(pruned >= 2, "{pruned}");
    assert_eq!(store.samples(slo.id, at).await.unwrap(), vec![samples[0]]);
}

mod embedded {
    use crate::helpers::sqlite;

    #[tokio::test]
    async fn created_slo_reads_back_and_is_listed() {
        let (_dir, store) = sqlite().await;
        super::created_slo_reads_back_and_is_listed(&store).await;
    }

    #[tokio::test]
    async fn update_replaces_the_spec_and_keeps_the_history() {
        let (_dir, store) = sqlite().await;
        super::update_replaces_the_spec_and_keeps_the_history(&store).await;
    }

    #[tokio::test]
    async fn deleting_an_slo_deletes_its_history() {
        let (_dir, store) = sqlite().await;
        super::deleting_an_slo_deletes_its_history(&store).await;
    }

    #[tokio::test]
    async fn samples_are_stored_once_in_order_and_pruned() {
        let (_dir, store) = sqlite().await;
        super::samples_are_stored_once_in_order_and_pruned(&store).await;
    }

    #[tokio::test]
    async fn names_are_unique() {
        let (_dir, store) = sqlite().await;
        super::names_are_unique(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let (_dir, store) = sqlite().await;
        super::run_all(&store).await;
    }
}

mod postgres {
    use crate::helpers::postgres;

    #[tokio::test]
    async fn created_slo_reads_back_and_is_listed() {
        let Some(store) = postgres().await else { return };
        super::created_slo_reads_back_and_is_listed(&store).await;
    }

    #[tokio::test]
    async fn update_replaces_the_spec_and_keeps_the_history() {
        let Some(store) = postgres().await else { return };
        super::update_replaces_the_spec_and_keeps_the_history(&store).await;
    }

    #[tokio::test]
    async fn deleting_an_slo_deletes_its_history() {
        let Some(store) = postgres().await else { return };
        super::deleting_an_slo_deletes_its_history(&store).await;
    }

    #[tokio::test]
    async fn samples_are_stored_once_in_order_and_pruned() {
        let Some(store) = postgres().await else { return };
        super::samples_are_stored_once_in_order_and_pruned(&store).await;
    }

    #[tokio::test]
    async fn names_are_unique() {
        let Some(store) = postgres().await else { return };
        super::names_are_unique(&store).await;
    }

    #[tokio::test]
    async fn checks_do_not_interfere_on_one_shared_store() {
        let Some(store) = postgres().await else { return };
        super::run_all(&store).await;
    }
}
