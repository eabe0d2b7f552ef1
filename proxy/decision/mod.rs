//! Who may do what: routes, data contracts (ODCS), the policy store, Cedar
//! authorization, end-user tokens and quotas. Returns its own error enums;
//! HTTP statuses are chosen only in `pipeline`.

pub mod authz;
pub mod contract;
pub mod describe;
pub mod fields;
pub mod finding;
pub mod jwt;
pub mod lifecycle;
pub mod quota;
pub mod routes;
pub mod store;
