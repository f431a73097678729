//! A gRPC client of a broker's port, compiled from `proto/`, as anyone on
//! the network could run it: without TLS, with TLS but no certificate, or
//! with a certificate (ours, or one from another CA). It trusts the
//! cluster CA, so a refused call is the broker's refusal, not the client's.

use std::{io, net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use switchboard_cluster::tls::identity::cert_info;
use switchboard_proto::{
    broker::v1::broker_client::BrokerClient, replica::v1::replica_client::ReplicaClient,
};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::certificates::NodeCerts;

/// How the client presents itself.
pub enum Presenting<'a> {
    /// Plain HTTP/2, no TLS.
    NoTls,
    /// TLS without a client certificate.
    NoCertificate,
    /// TLS with these credentials (their CA file is not used: the client
    /// trusts the cluster CA it is given).
    Certificate(&'a NodeCerts),
}

/// A lazily connected client for the broker named `broker` at `addr`,
/// trusting `cluster_ca`.
pub fn broker_client(
    addr: SocketAddr,
    broker: &str,
    cluster_ca: &Path,
    presenting: Presenting<'_>,
) -> anyhow::Result<BrokerClient<Channel>> {
    Ok(BrokerClient::new(channel(
        addr, broker, cluster_ca, presenting,
    )?))
}

/// A lazily connected client of the replication service of the broker
/// named `broker` at `addr`, trusting `cluster_ca`.
pub fn replica_client(
    addr: SocketAddr,
    broker: &str,
    cluster_ca: &Path,
    presenting: Presenting<'_>,
) -> anyhow::Result<ReplicaClient<Channel>> {
    Ok(ReplicaClient::new(channel(
        addr, broker, cluster_ca, presenting,
    )?))
}

fn channel(
    addr: SocketAddr,
    broker: &str,
    cluster_ca: &Path,
    presenting: Presenting<'_>,
) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let channel = match presenting {
        Presenting::NoTls => endpoint.connect_lazy(),
        Presenting::NoCertificate | Presenting::Certificate(_) => {
            let config = Arc::new(client_config(cluster_ca, presenting)?);
            let name = ServerName::try_from(format!("{broker}.broker.switchboard"))?;
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let (config, name) = (config.clone(), name.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let tls = TlsConnector::from(config).connect(name, tcp).await?;
                    Ok::<_, io::Error>(TokioIo::new(tls))
                }
            }))
        }
    };
    Ok(channel)
}

/// The serial (hex) of the certificate the broker named `broker` at
/// `addr` presents to a new handshake.
pub async fn served_serial(
    addr: SocketAddr,
    broker: &str,
    cluster_ca: &Path,
    certs: &NodeCerts,
) -> anyhow::Result<String> {
    let config = Arc::new(client_config(cluster_ca, Presenting::Certificate(certs))?);
    let name = ServerName::try_from(format!("{broker}.broker.switchboard"))?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("the broker presented no certificate")?;
    Ok(cert_info(der)?.serial)
}

fn client_config(cluster_ca: &Path, presenting: Presenting<'_>) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cluster_ca)? {
        roots.add(cert?)?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match presenting {
        Presenting::Certificate(certs) => {
            let chain =
                CertificateDer::pem_file_iter(&certs.cert)?.collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(&certs.key)?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
