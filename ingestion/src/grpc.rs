//! The seed contract's gRPC service `dataprocessor.DataProcessor/ProcessData`
//!, the twin of `POST /ingest`: both answer from one
//! [`Report`](crate::ingest::Report). Every answer is a `ProcessingResponse`
//! (`ok` or `rejected` with the reasons); a gRPC error status comes from the
//! credentials (`authorization: Bearer <INGEST_TOKEN or an admin's token>`
//! metadata: UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE) or from the
//! transport, e.g. a message over [`MAX_MESSAGE_BYTES`].

use lizards_shared::shutdown::Shutdown;
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

use lizards_shared::admin::{AdminError, IngestAccess, bearer};

use crate::ingest::{Api, Ingest, MAX_CONTENT_BYTES, REJECTED};

/// Code generated from `proto/dataprocessor.proto`: messages, server and client.
pub mod proto {
    tonic::include_proto!("dataprocessor");
}

use proto::{
    ProcessingResponse, RawData,
    data_processor_server::{DataProcessor, DataProcessorServer},
};

/// Largest request decoded: twice the content limit, so that content a
/// little over the limit gets a `rejected` answer naming the limit instead of
/// a bare `RESOURCE_EXHAUSTED`.
pub const MAX_MESSAGE_BYTES: usize = 2 * MAX_CONTENT_BYTES;

pub struct DataProcessorService {
    ingest: Ingest,
    access: IngestAccess,
}

#[tonic::async_trait]
impl DataProcessor for DataProcessorService {
    async fn process_data(&self, request: Request<RawData>) -> Result<Response<ProcessingResponse>, Status> {
        let presented = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(bearer);
        if let Err(refusal) = self.access.admit(presented).await {
            self.ingest.count_unauthorized(Api::Grpc);
            return Err(refused(refusal));
        }
        let content = request.into_inner().content;
        let response = match self.ingest.ingest(Api::Grpc, content.as_bytes()).await {
            Ok(report) => ProcessingResponse { status: report.status().to_string(), message: report.message() },
            Err(error) => ProcessingResponse { status: REJECTED.to_string(), message: error.to_string() },
        };
        Ok(Response::new(response))
    }
}

fn refused(refusal: AdminError) -> Status {
    let message = refusal.to_string();
    match refusal {
        AdminError::Missing(_) | AdminError::Invalid(_) => Status::unauthenticated(message),
        AdminError::NotAdmin => Status::permission_denied(message),
        AdminError::Unconfirmed(_) => Status::unavailable(message),
    }
}

pub fn service(ingest: Ingest, access: IngestAccess) -> DataProcessorServer<DataProcessorService> {
    DataProcessorServer::new(DataProcessorService { ingest, access }).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// Serves the service on `listener` until `shutdown`, then lets calls in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    access: IngestAccess,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(service(ingest, access))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
