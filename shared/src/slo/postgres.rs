//! PostgreSQL adapter of the SLO port on the quote store's pools (reads on the
//! read-only pool, writes on the writer pool).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row, postgres::PgRow};

use super::{
    Sample, Slo, SloId, SloSpec, SloStore, SloStoreError, bind_spec, parse_aggregation, parse_comparison, parse_labels,
    window, write_error,
};
use crate::store::PostgresStore;

/// The columns an [`Slo`] is read from (a macro, so `concat!` can build
/// the static SQL sqlx asks for).
macro_rules! columns {
    () => {
        "id, name, metric, labels, aggregation, comparison, threshold, window_minutes, created_at, updated_at"
    };
}

fn slo_from_row(row: &PgRow) -> Result<Slo, SloStoreError> {
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
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl SloStore for PostgresStore {
    async fn create_slo(&self, spec: &SloSpec, now: DateTime<Utc>) -> Result<Slo, SloStoreError> {
        let sql = concat!(
            "INSERT INTO slos (name, metric, labels, aggregation, comparison, threshold, window_minutes, created_at, ",
            "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
            columns!()
        );
        let row =
            bind_spec(sqlx::query(sql), spec).bind(now).bind(now).fetch_one(&self.write).await.map_err(write_error)?;
        slo_from_row(&row)
    }

    async fn update_slo(&self, id: SloId, spec: &SloSpec, now: DateTime<Utc>) -> Result<Option<Slo>, SloStoreError> {
        let sql = concat!(
            "UPDATE slos SET name = $1, metric = $2, labels = $3, aggregation = $4, comparison = $5, threshold = $6, ",
            "window_minutes = $7, updated_at = $8 WHERE id = $9 RETURNING ",
            columns!()
        );
        let row = bind_spec(sqlx::query(sql), spec)
            .bind(now)
            .bind(id)
            .fetch_optional(&self.write)
            .await
            .map_err(write_error)?;
        row.as_ref().map(slo_from_row).transpose()
    }

    async fn delete_slo(&self, id: SloId) -> Result<bool, SloStoreError> {
        let done = sqlx::query("DELETE FROM slos WHERE id = $1").bind(id).execute(&self.write).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn slo(&self, id: SloId) -> Result<Option<Slo>, SloStoreError> {
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM slos WHERE id = $1")).bind(id).fetch_optional(&self.read);
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
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new("INSERT INTO slo_samples (slo_id, at, value, met) ");
        query.push("SELECT v.slo_id, v.at, v.value, v.met FROM (");
        query.push_values(samples, |mut row, sample| {
            row.push_bind(sample.slo_id).push_bind(sample.at).push_bind(sample.value).push_bind(sample.met);
        });
        query.push(") v (slo_id, at, value, met) JOIN slos ON slos.id = v.slo_id ON CONFLICT (slo_id, at) DO NOTHING");
        query.build().execute(&self.write).await?;
        Ok(())
    }

    async fn samples(&self, id: SloId, since: DateTime<Utc>) -> Result<Vec<Sample>, SloStoreError> {
        let rows = sqlx::query("SELECT at, value, met FROM slo_samples WHERE slo_id = $1 AND at >= $2 ORDER BY at")
            .bind(id)
            .bind(since)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Sample {
                    slo_id: id,
                    at: row.try_get("at")?,
                    value: row.try_get("value")?,
                    met: row.try_get("met")?,
                })
            })
            .collect()
    }

    async fn prune_samples(&self, before: DateTime<Utc>) -> Result<u64, SloStoreError> {
        let done = sqlx::query("DELETE FROM slo_samples WHERE at < $1").bind(before).execute(&self.write).await?;
        Ok(done.rows_affected())
    }
}
