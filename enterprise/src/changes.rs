//! Following the database's announcements of tenancy and identity changes
//! ([`CHANGES_CHANNEL`]): every replica drops what it remembers of states, keys, tokens and
//! providers when one is made anywhere.

use std::time::Duration;

use decision_gate_store_enterprise::{CHANGES_CHANNEL, PgPool};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// How long to wait before listening again after the database could not be listened to.
const RETRY: Duration = Duration::from_secs(1);

/// Calls `forget` (which drops what this replica remembers of tenancy and identity: states,
/// keys, verified tokens, stored providers) whenever the database announces a change on
/// [`CHANGES_CHANNEL`], and whenever listening starts or its connection was lost (an
/// announcement may have been missed), so every replica follows a change within milliseconds;
/// the caches' own lifetimes (at most a second) bound it when the database cannot be listened
/// to. Returns when `shutdown` is cancelled.
pub async fn follow_changes(
    pool: PgPool,
    forget: impl Fn() + Send + 'static,
    shutdown: CancellationToken,
) {
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANGES_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = tokio::select! {
            () = shutdown.cancelled() => return,
            listener = listening => listener,
        };
        if let Ok(mut listener) = listener {
            forget();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = listener.try_recv() => match next {
                        Ok(_) => forget(),
                        Err(e) => {
                            tracing::warn!("listening for tenancy and identity changes: {e}");
                            break;
                        }
                    },
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}
