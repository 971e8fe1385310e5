//! Image records and leases.

use super::{Client, ContainerdError};
use crate::oci::blob::Blob;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateImageRequest, CreateRequest, DeleteImageRequest, DeleteRequest,
    Image, ListImagesRequest, Resource, UpdateImageRequest,
};
use containerd_client::types::Descriptor;
use tonic::Code;

/// The label on every image nixoci writes (`nixoci clean -a` removes them).
pub const MANAGED_LABEL: &str = "nixoci.managed";

/// Point `name` at `target`: `images.Update`, then `images.Create` on NotFound.
pub async fn put(c: &Client, name: &str, target: &Blob) -> Result<(), ContainerdError> {
    let image = Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.to_string(),
            size: target.size as i64,
            annotations: Default::default(),
        }),
        labels: [(MANAGED_LABEL.to_string(), "true".to_string())].into(),
        ..Default::default()
    };
    let mut images = ImagesClient::new(c.channel.clone());
    let update = UpdateImageRequest {
        image: Some(image.clone()),
        update_mask: None,
        source_date_epoch: None,
    };
    match images.update(c.req(update)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => {
            let create = CreateImageRequest {
                image: Some(image),
                source_date_epoch: None,
            };
            images
                .create(c.req(create))
                .await
                .map_err(c.err(format!("create image {name}")))?;
            Ok(())
        }
        Err(s) => Err(c.err(format!("update image {name}"))(s)),
    }
}

pub async fn list(c: &Client) -> Result<Vec<Image>, ContainerdError> {
    let mut images = ImagesClient::new(c.channel.clone());
    let r = images
        .list(c.req(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(c.err("list images"))?;
    let mut v = r.into_inner().images;
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

pub async fn get(c: &Client, name: &str) -> Result<Option<Image>, ContainerdError> {
    let mut images = ImagesClient::new(c.channel.clone());
    match images
        .get(c.req(containerd_client::services::v1::GetImageRequest { name: name.into() }))
        .await
    {
        Ok(r) => Ok(r.into_inner().image),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(c.err(format!("get image {name}"))(s)),
    }
}

/// Delete an image record; returns false when there was none.
pub async fn delete(c: &Client, name: &str) -> Result<bool, ContainerdError> {
    let mut images = ImagesClient::new(c.channel.clone());
    let req = DeleteImageRequest {
        name: name.into(),
        sync: true,
        target: None,
    };
    match images.delete(c.req(req)).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(c.err(format!("delete image {name}"))(s)),
    }
}

/// Create a lease that expires on its own after an hour (so a killed
/// nixoci leaves nothing pinned for long).
pub async fn create_lease(c: &Client) -> Result<String, ContainerdError> {
    let id = super::unique_id("nixoci");
    let mut leases = LeasesClient::new(c.channel.clone());
    let req = CreateRequest {
        id: id.clone(),
        labels: [(
            "containerd.io/gc.expire".to_string(),
            super::expire_in(3600),
        )]
        .into(),
    };
    leases
        .create(c.req(req))
        .await
        .map_err(c.err("create lease"))?;
    Ok(id)
}

pub async fn delete_lease(c: &Client, id: &str) -> Result<(), ContainerdError> {
    let mut leases = LeasesClient::new(c.channel.clone());
    let req = DeleteRequest {
        id: id.into(),
        sync: false,
    };
    match leases.delete(c.req(req)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(c.err(format!("delete lease {id}"))(s)),
    }
}

/// Put an existing resource (`content`, or `snapshots/<snapshotter>`) under
/// the client's lease. A blob or snapshot that already exists may be
/// referenced by nothing (an earlier, aborted import); without this the
/// garbage collector could remove it before the image record refers to it.
pub async fn lease_resource(c: &Client, id: &str, kind: &str) -> Result<(), ContainerdError> {
    let Some(lease) = &c.lease else { return Ok(()) };
    let mut leases = LeasesClient::new(c.channel.clone());
    let req = AddResourceRequest {
        id: lease.clone(),
        resource: Some(Resource {
            id: id.into(),
            r#type: kind.into(),
        }),
    };
    leases
        .add_resource(c.req(req))
        .await
        .map_err(c.err(format!("lease {kind} {id}")))?;
    Ok(())
}
