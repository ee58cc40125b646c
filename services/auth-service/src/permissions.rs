//! Realm roles -> NATS permissions, from a small JSON file (`permissions.json` is the
//! default, compiled in; `PERMISSIONS_FILE` replaces it). `{user}` in a subject is the
//! user's name, so a `chat-user` may publish only `chat.msg.*.<own name>`.

use std::collections::BTreeMap;
use std::path::Path;

use chat_protocol::validate_name;
use serde::Deserialize;

use crate::denial::Denial;

const DEFAULT: &str = include_str!("../permissions.json");

/// The permissions file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PermissionsError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not the expected JSON.
    #[error("invalid permissions file: {0}")]
    Parse(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RoleGrant {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct File {
    roles: BTreeMap<String, RoleGrant>,
}

/// What a user may do, as NATS allow lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) publish: Vec<String>,
    pub(crate) subscribe: Vec<String>,
    /// The roles that granted it.
    pub(crate) roles: Vec<String>,
}

/// The role table.
#[derive(Debug)]
pub(crate) struct Permissions {
    roles: BTreeMap<String, RoleGrant>,
}

impl Permissions {
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, PermissionsError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| PermissionsError::Read { path: path.display().to_string(), source })?,
            None => DEFAULT.to_owned(),
        };
        let file: File = serde_json::from_str(&text)?;
        Ok(Self { roles: file.roles })
    }

    /// The union of the user's mapped roles, with `{user}` filled in.
    pub(crate) fn grant(&self, user: &str, roles: &[String]) -> Result<Grant, Denial> {
        validate_name("user", user).map_err(|_| Denial::InvalidUser)?;
        let mut grant = Grant { publish: Vec::new(), subscribe: Vec::new(), roles: Vec::new() };
        for role in roles {
            let Some(mapped) = self.roles.get(role) else { continue };
            grant.roles.push(role.clone());
            let fill = |s: &String| s.replace("{user}", user);
            grant.publish.extend(mapped.publish.iter().map(fill));
            grant.subscribe.extend(mapped.subscribe.iter().map(fill));
        }
        if grant.roles.is_empty() {
            return Err(Denial::NoRole);
        }
        for list in [&mut grant.publish, &mut grant.subscribe] {
            list.sort();
            list.dedup();
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn chat_users_publish_only_as_themselves() {
        let p = Permissions::load(None).expect("default file");
        let g = p.grant("alice", &roles(&["offline_access", "chat-user"])).expect("granted");
        assert_eq!(g.publish, ["chat.history.*.alice", "chat.msg.*.alice"]);
        assert_eq!(g.subscribe, ["_INBOX.chat.alice.>", "chat.msg.>"]);
        assert_eq!(g.roles, ["chat-user"]);
    }

    #[test]
    fn readonly_users_cannot_publish_messages() {
        let p = Permissions::load(None).expect("default file");
        let g = p.grant("carol", &roles(&["chat-readonly"])).expect("granted");
        assert!(g.publish.iter().all(|s| !s.starts_with("chat.msg")));
    }

    #[test]
    fn no_role_or_a_bad_name_is_refused() {
        let p = Permissions::load(None).expect("default file");
        assert_eq!(p.grant("dave", &roles(&["default-roles-chat"])), Err(Denial::NoRole));
        assert_eq!(p.grant("dave", &[]), Err(Denial::NoRole));
        assert_eq!(p.grant("eve.>", &roles(&["chat-user"])), Err(Denial::InvalidUser));
        assert_eq!(p.grant("Eve", &roles(&["chat-user"])), Err(Denial::InvalidUser));
    }
}
