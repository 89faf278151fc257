//! A 32-byte server secret in a private file (64 hex digits, mode 0600): the digest key of
//! presented credentials, the enterprise server's API-key pepper. Created whole or not at all,
//! so a crash leaves no half-written secret and replicas starting together agree on one.

use std::path::Path;

/// A fresh random secret.
///
/// # Errors
/// The operating system has no randomness to give.
pub fn random() -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a secret key: {e}"))?;
    Ok(key)
}

/// The secret in `path`, creating the file with a fresh random one when it does not exist.
///
/// # Errors
/// The file cannot be read or created, or does not hold 64 hex digits.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], String> {
    match load(path)? {
        Some(key) => Ok(key),
        None => create(path),
    }
}

/// The secret in `path`, `None` when the file does not exist.
///
/// # Errors
/// The file cannot be read, or does not hold 64 hex digits.
pub fn load(path: &Path) -> Result<Option<[u8; 32]>, String> {
    let name = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let bytes = hex::decode(text.trim()).map_err(|e| format!("{name}: not a hex key: {e}"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{name}: the key must be 32 bytes (64 hex digits)"))?;
    Ok(Some(key))
}

/// Writes a fresh secret to `path` whole or not at all: into a private temporary file, synced,
/// then linked into place, so a crash leaves no half-written key and, when processes sharing
/// the directory create it at once, the first link wins and the others read its key.
fn create(path: &Path) -> Result<[u8; 32], String> {
    let name = path.display();
    let created = random()?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        decision_gate_core::at_rest::create_private_dir_all(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Named by the new key's first bytes: unique to this attempt, whichever process or thread
    // makes it.
    let temp = path.with_extension(format!("tmp-{}", hex::encode(&created[..8])));
    let written = (|| {
        let mut file = decision_gate_core::at_rest::private_file_options()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        std::io::Write::write_all(&mut file, hex::encode(created).as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temp, path)
    })();
    let _ = std::fs::remove_file(&temp);
    match written {
        Ok(()) => {
            if let Some(dir) = dir {
                decision_gate_core::at_rest::sync_dir(dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            Ok(created)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            load(path)?.ok_or_else(|| format!("{name}: created by another process, then gone"))
        }
        Err(e) => Err(format!("{name}: {e}")),
    }
}
