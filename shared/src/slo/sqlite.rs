//! SQLite adapter of the SLO port on the quote store's pools (reads on the
//! read-only pool, writes on the single writer). Times are microseconds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, sqlite::SqliteRow};

use super::{
    Sample, Slo, SloId, SloSpec, SloStore, SloStoreError, bind_spec, parse_aggregation, parse_comparison, parse_labels,
    window, write_error,
};
use crate::{store::SqliteStore, time};

/// The columns an [`Slo`] is read from (a macro, so `concat!` can build
/// the static SQL sqlx asks for).
macro_rules! columns {
    () => {
        "id, name, metric, labels, aggregation, comparison, threshold, window_minutes, created_at, updated_at"
    };
}

fn slo_from_row(row: &SqliteRow) -> Result<Slo, SloStoreError> {
    Ok(Slo {
        id: row.try_get("id")?,
        spec: SloSpec {
            name: row.try_get("name")?,
            metric: row.try_get("metric")?,
            labels: parse_labels(row.try_get("labels")?)?,
            aggregation: parse_aggregation(row.try_get("aggregation")?)?,
            comparison: parse_comparison(row.try_get("comparison")?)?,
            threshold: row.try_get("threshold")?,
            window_minutes: window(row.try_get("window_minutes")?)?,
        },
        created_at: time::from_micros(row.try_get("created_at")?),
        updated_at: time::from_micros(row.try_get("updated_at")?),
    })
}

#[async_trait]
impl SloStore for SqliteStore {
    async fn create_slo(&self, spec: &SloSpec, now: DateTime<Utc>) -> Result<Slo, SloStoreError> {
        let sql = concat!(
            "INSERT INTO slos (name, metric, labels, aggregation, comparison, threshold, window_minutes, created_at, ",
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            columns!()
        );
        let row = bind_spec(sqlx::query(sql), spec)
            .bind(time::micros(&now))
            .bind(time::micros(&now))
            .fetch_one(&self.write)
            .await
            .map_err(write_error)?;
        slo_from_row(&row)
    }

    async fn update_slo(&self, id: SloId, spec: &SloSpec, now: DateTime<Utc>) -> Result<Option<Slo>, SloStoreError> {
        let sql = concat!(
            "UPDATE slos SET name = ?, metric = ?, labels = ?, aggregation = ?, comparison = ?, threshold = ?, ",
            "window_minutes = ?, updated_at = ? WHERE id = ? RETURNING ",
            columns!()
        );
        let row = bind_spec(sqlx::query(sql), spec)
            .bind(time::micros(&now))
            .bind(id)
            .fetch_optional(&self.write)
            .await
            .map_err(write_error)?;
        row.as_ref().map(slo_from_row).transpose()
    }

    async fn delete_slo(&self, id: SloId) -> Result<bool, SloStoreError> {
        let done = sqlx::query("DELETE FROM slos WHERE id = ?").bind(id).execute(&self.write).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn slo(&self, id: SloId) -> Result<Option<Slo>, SloStoreError> {
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM slos WHERE id = ?")).bind(id).fetch_optional(&self.read);
        row.await?.as_ref().map(slo_from_row).transpose()
    }

    async fn slos(&self) -> Result<Vec<Slo>, SloStoreError> {
        let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM slos ORDER BY id")).fetch_all(&self.read).await?;
        rows.iter().map(slo_from_row).collect()
    }

    async fn record_samples(&self, samples: &[Sample]) -> Result<(), SloStoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        // An SLO deleted since it was evaluated has no row to refer to:
        // INSERT ... SELECT only keeps the samples of SLOs that exist.
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO slo_samples (slo_id, at, value, met) ");
        query.push("SELECT v.column1, v.column2, v.column3, v.column4 FROM (");
        query.push_values(samples, |mut row, sample| {
            row.push_bind(sample.slo_id)
                .push_bind(time::micros(&sample.at))
                .push_bind(sample.value)
                .push_bind(sample.met.map(i64::from));
        });
        query.push(") v JOIN slos ON slos.id = v.column1 WHERE true ON CONFLICT (slo_id, at) DO NOTHING");
        query.build().execute(&self.write).await?;
        Ok(())
    }

    async fn samples(&self, id: SloId, since: DateTime<Utc>) -> Result<Vec<Sample>, SloStoreError> {
        let rows = sqlx::query("SELECT at, value, met FROM slo_samples WHERE slo_id = ? AND at >= ? ORDER BY at")
            .bind(id)
            .bind(time::micros(&since))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Sample {
                    slo_id: id,
                    at: time::from_micros(row.try_get("at")?),
                    value: row.try_get("value")?,
                    met: row.try_get::<Option<i64>, _>("met")?.map(|met| met != 0),
                })
            })
            .collect()
    }

    async fn prune_samples(&self, before: DateTime<Utc>) -> Result<u64, SloStoreError> {
        let done = sqlx::query("DELETE FROM slo_samples WHERE at < ?")
            .bind(time::micros(&before))
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }
}
