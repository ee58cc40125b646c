//! Why a login is refused: one value per reason, its metric label, and whether it is the
//! client's doing or ours.

/// Why a token was refused; [`Denial::reason`] is the low-cardinality metric label and
/// the message the NATS server logs. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denial {
    #[error("no token")]
    MissingToken,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("no role grants chat access")]
    NoRole,
    #[error("user name is not a valid subject token")]
    InvalidUser,
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl Denial {
    /// Every denial, so their counters can exist at 0 from start-up.
    pub(crate) const ALL: [Self; 12] = [
        Self::MissingToken,
        Self::Malformed,
        Self::UnsupportedAlgorithm,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::NoRole,
        Self::InvalidUser,
        Self::KeysUnavailable,
    ];

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed_token",
            Self::UnsupportedAlgorithm => "unsupported_alg",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::NoRole => "no_role",
            Self::InvalidUser => "invalid_user",
            Self::KeysUnavailable => "jwks_unavailable",
        }
    }

    /// `error` for failures of ours, `denied` for the client's.
    pub(crate) fn result(self) -> &'static str {
        match self {
            Self::KeysUnavailable => "error",
            _ => "denied",
        }
    }
}
