//! What goes wrong with a portable volume, and the status and message the client gets for it
//! (every message starts with `busbar-volumes:`, so the CLI's `Error response from daemon:`
//! line names the adapter at fault).

use busbar_adapter::hook::Refusal;

use crate::engines::EngineError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A container on the volume's node uses it: moving it would pull the data from under it.
    #[error("volume {name} is in use by container {container} ({state}) on {node}: it cannot move to {to}; stop and remove that container, or run this one on {node}")]
    InUse {
        name: String,
        node: String,
        container: String,
        state: String,
        to: String,
    },
    /// Another create holds the volume's lock for longer than we wait.
    #[error("volume {name} is held by another container create on {node} (request {request_id}) for longer than {waited:?}; try again")]
    Busy {
        name: String,
        node: String,
        request_id: String,
        waited: std::time::Duration,
    },
    /// The move failed before it was recorded: the data is whole where it was.
    #[error("moving volume {name} from {from} to {to} failed, the data stays on {from}: {source}")]
    MoveFailed {
        name: String,
        from: String,
        to: String,
        #[source]
        source: EngineError,
    },
    /// The record changed while the data was copied (a `volume rm`, an operator's edit):
    /// the copy is dropped.
    #[error("volume {name} changed in etcd while it was copied to {to}; the copy was dropped, the data stays on {from}")]
    Changed {
        name: String,
        from: String,
        to: String,
    },
    #[error("moving volume {name} from {from} to {to} took longer than {after:?}; the data stays on {from} unless etcd says otherwise")]
    TimedOut {
        name: String,
        from: String,
        to: String,
        after: std::time::Duration,
    },
    #[error("node {node} has no image to make a helper container from: pull one there (busybox) or start busbar-volumes with --helper-image")]
    NoHelperImage { node: String },
    #[error(
        "a portable volume needs a name (docker volume create --label busbar.portable=true NAME)"
    )]
    Unnamed,
    /// Boxed: etcd's errors are large, and every hook returns this type. (Their text starts
    /// with `etcd`.)
    #[error("{0}")]
    Store(Box<StoreError>),
}

impl From<StoreError> for VolumeError {
    fn from(e: StoreError) -> Self {
        VolumeError::Store(Box::new(e))
    }
}

impl VolumeError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            VolumeError::InUse { .. } | VolumeError::Busy { .. } | VolumeError::Changed { .. } => {
                409
            }
            VolumeError::MoveFailed { source, .. } => match source.status() {
                Some(409) => 409,
                Some(_) => 500,
                None => 503,
            },
            VolumeError::TimedOut { .. } => 504,
            VolumeError::NoHelperImage { .. } => 500,
            VolumeError::Unnamed => 400,
            VolumeError::Store(_) => 503,
        }
    }

    /// The refusal the client gets: Docker's `{"message"}` with [`VolumeError::status`].
    pub fn refusal(&self) -> Refusal {
        Refusal::new(self.status(), format!("busbar-volumes: {self}"))
    }
}
