//! Identity: who a caller is and what its profiles allow.
//!
//! A request carries a bearer token; its SHA-256 is looked up (the token
//! itself is never stored) and yields a [`Caller`]: the one Vantiq namespace
//! the token is bound to, the user, and the [`Grants`] of its profiles. Each
//! handler names the [`Action`] it performs and asks [`Caller::require`].
//! Passwords are stored as salted PBKDF2-HMAC-SHA256.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The profile a K8s worker's token carries (`<ns>.k8sWorker__system`).
pub const WORKER_PROFILE: &str = "k8sWorker__system";
/// Namespace administrators.
pub const ADMIN_PROFILE: &str = "admin";
/// Namespace users.
pub const USER_PROFILE: &str = "user";

/// What a caller's profiles allow, as a union.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// The `admin` profile: everything in the namespace.
    pub admin: bool,
    /// The `user` profile: read installations, read and write documents.
    pub user: bool,
    /// The `k8sWorker__system` profile: what a worker needs.
    pub worker: bool,
}

/// Something a request does, checked against [`Grants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read `k8sclusters`.
    ReadClusters,
    /// Create, change or delete `k8sclusters`.
    WriteClusters,
    /// Send a command (deploy, undeploy, …).
    RequestOperation,
    /// Ask for a `verify` of one installation now (it changes nothing in the
    /// cluster, so the `user` profile, which reads installations, may too).
    VerifyInstallation,
    /// Read `k8sinstallations`.
    ReadInstallations,
    /// Read `k8sworkitems`.
    ReadWorkitems,
    /// Cancel (delete) `k8sworkitems`.
    CancelWorkitems,
    /// Download a cluster's worker templates (they name the cluster and
    /// the control plane, and set up what holds the worker's token).
    DownloadTemplates,
    /// Check a deploy request without submitting it (the validation
    /// endpoint): it changes nothing, so users, who fill the form, may too.
    ValidateDeploy,
    /// Read the operation history (`k8soperations`): admins only, since a
    /// record names who asked for what in the whole namespace.
    ReadOperations,
    /// Read `documents`.
    ReadDocuments,
    /// Upload or delete `documents`.
    WriteDocuments,
    /// Write, list or delete `secrets` (never read their values).
    ManageSecrets,
    /// Create, list or revoke long-lived tokens.
    ManageTokens,
    /// Create or list users.
    ManageUsers,
    /// Create namespaces and set their quota (system admins only).
    ManageNamespaces,
    /// Add profiles to the namespace (`K8sManager.addK8sWorkerProfile`).
    ManageProfiles,
    /// Claim, renew, complete, fail and release workitems.
    WorkerProtocol,
    /// `--vantiq-strict`: report work through the documented resources
    /// (update its cluster's workitems' status, delete them when done,
    /// upsert and delete its cluster's installation records).
    ReportWork,
}

impl Action {
    /// The action for a person ("reading k8sclusters").
    pub fn describe(self) -> &'static str {
        match self {
            Action::ReadClusters => "reading k8sclusters",
            Action::WriteClusters => "modifying k8sclusters",
            Action::RequestOperation => "requesting K8s operations",
            Action::VerifyInstallation => "verifying k8sinstallations",
            Action::ReadInstallations => "reading k8sinstallations",
            Action::ReadWorkitems => "reading k8sworkitems",
            Action::CancelWorkitems => "cancelling k8sworkitems",
            Action::ReadOperations => "reading k8soperations",
            Action::ValidateDeploy => "validating K8s deploy requests",
            Action::DownloadTemplates => "downloading K8s worker templates",
            Action::ReadDocuments => "reading documents",
            Action::WriteDocuments => "writing documents",
            Action::ManageSecrets => "managing secrets",
            Action::ManageTokens => "managing tokens",
            Action::ManageUsers => "managing users",
            Action::ManageNamespaces => "managing namespaces",
            Action::ManageProfiles => "managing profiles",
            Action::WorkerProtocol => "the K8s worker protocol",
            Action::ReportWork => "reporting K8s work through k8sworkitems and k8sinstallations",
        }
    }
}

impl Grants {
    /// The grants of a list of profile names (`admin`, `user`,
    /// `k8sWorker__system`, optionally qualified with `<ns>.`).
    pub fn from_profiles<S: AsRef<str>>(profiles: &[S]) -> Grants {
        let mut grants = Grants::default();
        for profile in profiles {
            match normalize_profile(profile.as_ref()) {
                Some(ADMIN_PROFILE) => grants.admin = true,
                Some(USER_PROFILE) => grants.user = true,
                Some(WORKER_PROFILE) => grants.worker = true,
                _ => {}
            }
        }
        grants
    }

    /// Whether the grants allow `action`. The worker profile allows only what a
    /// worker needs: read its clusters, installations and workitems, run the
    /// worker protocol, and read/write documents (fetchLogs output).
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        let admin = matches!(
            action,
            ReadClusters
                | WriteClusters
                | RequestOperation
                | VerifyInstallation
                | ReadInstallations
                | ReadWorkitems
                | CancelWorkitems
                | ReadOperations
                | ValidateDeploy
                | DownloadTemplates
                | ReadDocuments
                | WriteDocuments
                | ManageSecrets
                | ManageTokens
                | ManageUsers
                | ManageNamespaces
                | ManageProfiles
        );
        let user = matches!(
            action,
            ReadInstallations
                | VerifyInstallation
                | ValidateDeploy
                | ReadDocuments
                | WriteDocuments
        );
        let worker = matches!(
            action,
            ReadClusters
                | ReadInstallations
                | ReadWorkitems
                | ReadDocuments
                | WriteDocuments
                | WorkerProtocol
                | ReportWork
        );
        (self.admin && admin) || (self.user && user) || (self.worker && worker)
    }
}

/// The profile name without a `<namespace>.` qualifier, when it is one of ours.
pub fn normalize_profile(profile: &str) -> Option<&'static str> {
    let bare = profile.rsplit('.').next().unwrap_or(profile);
    match bare {
        ADMIN_PROFILE => Some(ADMIN_PROFILE),
        USER_PROFILE => Some(USER_PROFILE),
        WORKER_PROFILE | "federatedK8sWorker" => Some(WORKER_PROFILE),
        _ => None,
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The Vantiq namespace the token is bound to; every read and write is
    /// confined to it.
    pub namespace: String,
    /// The user the token was issued to.
    pub username: String,
    /// What the token's profiles allow.
    pub grants: Grants,
    /// Admin of the bootstrap namespace: may create namespaces.
    pub system_admin: bool,
    /// The SHA-256 of the token the request carries ([`token_hash`]).
    pub token_hash: String,
    /// The K8s cluster a worker token is bound to, once it is.
    pub k8s_cluster: Option<String>,
}

/// A caller's profiles do not allow an action in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action:?} is not granted in namespace {namespace}")]
pub struct Forbidden {
    /// What was refused.
    pub action: Action,
    /// The caller's namespace.
    pub namespace: String,
}

impl Caller {
    /// Refuses unless the profiles allow `action` (namespaces are managed by
    /// admins of the bootstrap namespace only).
    pub fn require(&self, action: Action) -> Result<(), Forbidden> {
        let allowed =
            self.grants.allows(action) && (action != Action::ManageNamespaces || self.system_admin);
        if allowed {
            Ok(())
        } else {
            Err(Forbidden {
                action,
                namespace: self.namespace.clone(),
            })
        }
    }
}

/// A new random 256-bit token, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A random hex identifier of `bytes` bytes (Vantiq `_id`s are 12 bytes).
pub fn random_id(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS random source is available");
    hex::encode(buffer)
}

/// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
pub fn hash_password(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source is available");
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut hash);
    format!(
        "pbkdf2-sha256${iterations}${}${}",
        hex::encode(salt),
        hex::encode(hash)
    )
}

/// Checks a login's `password`: against the user's `stored` hash, or, for
/// a user name that does not exist (`None`), against `dummy` (a
/// [`hash_password`] string of the same iterations) and then refused. Both
/// paths run one PBKDF2 verification, so the answer's time does not tell
/// whether the user exists.
pub fn verify_login(stored: Option<&str>, password: &str, dummy: &str) -> bool {
    match stored {
        Some(stored) => verify_password(password, stored),
        None => {
            let _ = verify_password(password, dummy);
            false
        }
    }
}

#[cfg(test)]
thread_local! {
    /// PBKDF2 iterations run by [`verify_password`] on this thread (tests
    /// count the work of a login path with it).
    static PBKDF2_ITERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Checks `password` against a [`hash_password`] string in constant time.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iterations), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(expected)) = (
        iterations.parse::<u32>(),
        hex::decode(salt),
        hex::decode(expected),
    ) else {
        return false;
    };
    if iterations == 0 || expected.len() != 32 {
        return false;
    }
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut hash);
    #[cfg(test)]
    PBKDF2_ITERATIONS.with(|count| count.set(count.get() + u64::from(iterations)));
    hash.iter()
        .zip(expected.iter())
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// Decodes `Authorization: Basic base64(user:pass)`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_reject() {
        let stored = hash_password("s3cret", 10);
        assert!(verify_password("s3cret", &stored));
        assert!(!verify_password("s3cret!", &stored));
        assert!(!verify_password("s3cret", "garbage"));
    }

    /// PBKDF2 iterations `work` runs on this thread.
    fn iterations_of(work: impl FnOnce() -> bool) -> (bool, u64) {
        let before = PBKDF2_ITERATIONS.with(std::cell::Cell::get);
        let answer = work();
        (
            answer,
            PBKDF2_ITERATIONS.with(std::cell::Cell::get) - before,
        )
    }

    #[test]
    fn an_unknown_user_costs_the_same_verification_as_a_known_one() {
        let stored = hash_password("s3cret", 1_000);
        let dummy = hash_password(&new_token(), 1_000);
        let known_right = iterations_of(|| verify_login(Some(&stored), "s3cret", &dummy));
        let known_wrong = iterations_of(|| verify_login(Some(&stored), "guess", &dummy));
        let unknown = iterations_of(|| verify_login(None, "guess", &dummy));
        assert_eq!(known_right, (true, 1_000));
        assert_eq!(known_wrong, (false, 1_000));
        assert_eq!(unknown, (false, 1_000), "the dummy hash is verified");
        // Even the dummy's own password does not log an unknown user in.
        assert!(!verify_login(None, "s3cret", &stored));
    }

    #[test]
    fn worker_profile_is_narrow() {
        let worker = Grants::from_profiles(&["ns1.k8sWorker__system"]);
        assert!(worker.allows(Action::WorkerProtocol));
        assert!(worker.allows(Action::ReadClusters));
        assert!(!worker.allows(Action::WriteClusters));
        assert!(!worker.allows(Action::RequestOperation));
        assert!(!worker.allows(Action::ManageSecrets));
        let user = Grants::from_profiles(&["user"]);
        assert!(!user.allows(Action::RequestOperation));
        assert!(!user.allows(Action::ReadClusters));
        let admin = Grants::from_profiles(&["admin"]);
        assert!(!admin.allows(Action::WorkerProtocol));
        assert!(!admin.allows(Action::ReportWork));
    }

    #[test]
    fn only_system_admins_manage_namespaces() {
        let mut caller = Caller {
            namespace: "ns1".into(),
            username: "root".into(),
            grants: Grants::from_profiles(&["admin"]),
            system_admin: false,
            token_hash: token_hash("t"),
            k8s_cluster: None,
        };
        assert_eq!(caller.require(Action::ManageTokens), Ok(()));
        assert_eq!(
            caller.require(Action::ManageNamespaces),
            Err(Forbidden {
                action: Action::ManageNamespaces,
                namespace: "ns1".into(),
            })
        );
        caller.system_admin = true;
        assert_eq!(caller.require(Action::ManageNamespaces), Ok(()));
    }

    #[test]
    fn tokens_are_long_and_hashed() {
        let token = new_token();
        assert_eq!(token.len(), 43);
        assert_eq!(token_hash(&token).len(), 64);
        assert_ne!(new_token(), token);
    }
}
