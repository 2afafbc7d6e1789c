//! The artifact store: where `ship publish` uploads an artifact, its sidecar and its
//! manifest, and where the hosts fetch releases from in pull mode. It is an existing
//! storage engine reached through `object_store` (on a tokio runtime of its own): S3
//! or any S3-compatible server, a plain HTTP server that takes `PUT` (WebDAV-style),
//! or a directory (`file://`).
//!
//! A release is published under `<prefix>/<app>/`: `<app>-<version>.tar.zst`, its
//! `.sha256` sidecar and `<app>-<version>.manifest.json`. The sidecar goes last, so a
//! release is published once its sidecar is there, and the sidecar's digest is what
//! hosts must get: an artifact already published with the same digest is not
//! uploaded again, and another one under the same version is refused, never
//! overwritten. Hosts are handed a URL to fetch (presigned and short-lived for S3, so
//! they need no credentials) and check every byte themselves.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use manifests::config::StoreTable;
use manifests::{AppName, Sha256, Version};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

/// Parts of a multipart upload.
const PART: usize = 8 << 20;
/// How long a presigned URL stays valid unless `[store] url_lifetime` says.
const URL_LIFETIME: Duration = Duration::from_secs(3600);

/// The S3 client of `bucket`, with the endpoint and region `table` sets and the
/// credentials of the environment.
fn s3(table: &StoreTable, bucket: &str) -> Result<AmazonS3, String> {
    if bucket.is_empty() {
        return Err("the URL names no bucket (s3://BUCKET/PREFIX)".into());
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(region) = &table.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &table.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The store of an `http(s)://` or `file://` URL.
fn plain(url: &str) -> Result<Arc<dyn ObjectStore>, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        let http = HttpBuilder::new()
            .with_url(url)
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(http));
    }
    let Some(dir) = url.strip_prefix("file://") else {
        return Err(
            "unknown kind of store: use s3://BUCKET/PREFIX, http(s)://HOST/PATH or file:///PATH"
                .into(),
        );
    };
    if !dir.starts_with('/') {
        return Err("a file:// URL needs an absolute path".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    let local = LocalFileSystem::new_with_prefix(dir).map_err(|e| e.to_string())?;
    Ok(Arc::new(local))
}

/// A store, opened.
pub struct Store {
    /// Its URL, as configured.
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The same store, when it is S3: it signs URLs.
    s3: Option<Arc<AmazonS3>>,
    /// Where plain (unsigned) URLs of its objects start (HTTP and file stores; an S3
    /// store's URLs are presigned).
    base: String,
    /// The prefix of every key.
    prefix: String,
    url_lifetime: Duration,
    runtime: tokio::runtime::Runtime,
}

/// What `publish` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// The artifact was uploaded.
    Uploaded,
    /// The store already had it (same digest): nothing was uploaded.
    AlreadyThere,
}

impl Store {
    /// Opens the store `table` describes (`url` overriding its URL).
    pub fn open(table: &StoreTable, url: Option<&str>) -> Result<Store, String> {
        let url = url
            .map(str::to_owned)
            .or_else(|| table.url.clone())
            .ok_or("no artifact store: set [store] url in ship.toml, or pass --to URL")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the store's runtime: {e}"))?;
        let trimmed = url.trim_end_matches('/').to_owned();
        let bad = |why: String| format!("artifact store {url}: {why}");
        let (store, s3, prefix): (Arc<dyn ObjectStore>, _, _) = match trimmed.strip_prefix("s3://")
        {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let s3 = Arc::new(s3(table, bucket).map_err(bad)?);
                (s3.clone(), Some(s3), prefix.to_owned())
            }
            None => (plain(&trimmed).map_err(bad)?, None, String::new()),
        };
        Ok(Store {
            base: trimmed.clone(),
            url: trimmed,
            store,
            s3,
            prefix,
            url_lifetime: table.url_lifetime.unwrap_or(URL_LIFETIME),
            runtime,
        })
    }

    /// The store's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of `file` of `app`.
    fn key(&self, app: &AppName, file: &str) -> Key {
        let key = format!("{}/{app}/{file}", self.prefix);
        Key::from(key.trim_start_matches('/'))
    }

    /// Where `key` is, for messages.
    fn shown(&self, key: &Key) -> String {
        format!(
            "{}/{}",
            self.url,
            key.as_ref()
                .trim_start_matches(&self.prefix)
                .trim_start_matches('/')
        )
    }

    /// The object `key`, or `None` when the store has no such object.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, String> {
        let got = self
            .runtime
            .block_on(async { self.store.get(key).await?.bytes().await });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.shown(key))),
        }
    }

    /// The published manifest of `version` (its JSON) and the artifact's size.
    pub fn manifest(&self, app: &AppName, version: &Version) -> Result<(Vec<u8>, u64), String> {
        let file = packager::artifact_file_name(app, version);
        let key = self.key(app, &format!("{file}.manifest.json"));
        let json = self
            .get(&key)?
            .ok_or_else(|| format!("{} is missing", self.shown(&key)))?;
        let artifact = self.key(app, &file);
        let meta = self
            .runtime
            .block_on(self.store.head(&artifact))
            .map_err(|e| format!("cannot read {}: {e}", self.shown(&artifact)))?;
        Ok((json, meta.size))
    }

    /// The published signature of `version` (its `.minisig` text), if it is signed.
    pub fn signature(&self, app: &AppName, version: &Version) -> Result<Option<String>, String> {
        let file = packager::artifact_file_name(app, version);
        let key = self.key(app, &format!("{file}.minisig"));
        self.get(&key)?
            .map(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| format!("{} is not a signature", self.shown(&key)))
            })
            .transpose()
    }

    /// The digest of the published artifact of `version`, if it is published.
    pub fn published(&self, app: &AppName, version: &Version) -> Result<Option<Sha256>, String> {
        let file = packager::artifact_file_name(app, version);
        let key = self.key(app, &format!("{file}.sha256"));
        let Some(bytes) = self.get(&key)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let digest = text
            .split_whitespace()
            .next()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("{} is not a sha256 sidecar", self.shown(&key)))?;
        Ok(Some(digest))
    }

    /// Publishes the artifact at `path` (of `app` `version`, whose sha256 is
    /// `digest` and manifest `manifest_json`, with its signature when signed);
    /// `progress` is told the bytes sent. A signature made after the artifact was
    /// published is added beside it.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        path: &Path,
        app: &AppName,
        version: &Version,
        digest: &Sha256,
        manifest_json: Vec<u8>,
        signature: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Published, String> {
        let file = packager::artifact_file_name(app, version);
        let put = |key: &Key, bytes: Vec<u8>| {
            self.runtime
                .block_on(self.store.put(key, PutPayload::from(bytes)))
                .map(drop)
                .map_err(|e| format!("cannot upload {}: {e}", self.shown(key)))
        };
        let signature_key = self.key(app, &format!("{file}.minisig"));
        match self.published(app, version)? {
            Some(there) if there == *digest => {
                if let Some(text) = signature
                    && self.signature(app, version)?.as_deref() != Some(text)
                {
                    put(&signature_key, text.as_bytes().to_vec())?;
                }
                return Ok(Published::AlreadyThere);
            }
            Some(there) => {
                return Err(format!(
                    "{} already holds another artifact for {app} {version} (sha256 {there}, this one is {digest}); a published release is never overwritten: pack a new version",
                    self.url
                ));
            }
            None => {}
        }
        let artifact_key = self.key(app, &file);
        self.upload(path, &artifact_key, progress)?;
        put(
            &self.key(app, &format!("{file}.manifest.json")),
            manifest_json,
        )?;
        if let Some(text) = signature {
            put(&signature_key, text.as_bytes().to_vec())?;
        }
        // Last: the release is published once its sidecar is there.
        put(
            &self.key(app, &format!("{file}.sha256")),
            format!("{digest}  {file}\n").into_bytes(),
        )?;
        Ok(Published::Uploaded)
    }

    /// Uploads the file at `path` to `key`, in parts where the store takes them.
    fn upload(&self, path: &Path, key: &Key, progress: &mut dyn FnMut(u64)) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot upload {}: {e}", self.shown(key));
        let mut file =
            std::fs::File::open(path).map_err(|e| fail(&format!("{}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // A plain HTTP server takes one PUT.
        if self.s3.is_none() && self.url.starts_with("http") {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(|e| fail(&e))?;
            let len = bytes.len() as u64;
            self.runtime
                .block_on(self.store.put(key, PutPayload::from(bytes)))
                .map_err(|e| fail(&e))?;
            progress(len);
            return Ok(());
        }
        self.runtime.block_on(async {
            let upload = self.store.put_multipart(key).await.map_err(|e| fail(&e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; PART];
            let mut sent = 0;
            loop {
                let n = file.read(&mut buf).map_err(|e| fail(&e))?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await.map_err(|e| fail(&e))?;
                writer.write(&buf[..n]);
                sent += n as u64;
                progress(sent);
            }
            writer.finish().await.map(drop).map_err(|e| fail(&e))
        })
    }

    /// The URL a host fetches the artifact of `version` from: presigned for S3
    /// (valid for `[store] url_lifetime`), plain otherwise.
    pub fn fetch_url(&self, app: &AppName, version: &Version) -> Result<String, String> {
        let key = self.key(app, &packager::artifact_file_name(app, version));
        if let Some(s3) = &self.s3 {
            return self
                .runtime
                .block_on(s3.signed_url(http::Method::GET, &key, self.url_lifetime))
                .map(|url| url.to_string())
                .map_err(|e| format!("cannot sign a URL for {}: {e}", self.shown(&key)));
        }
        Ok(format!("{}/{}", self.base, key.as_ref()))
    }
}
