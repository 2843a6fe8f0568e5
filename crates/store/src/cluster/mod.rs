//! A PostgreSQL cluster itself, below everything that stores tenant data: the embedded cluster
//! Bulkhead starts from the installed binaries, provisioning the owner role and databases of a
//! cluster Bulkhead controls, and the PostgreSQL roles the store serves and migrates through.

pub mod embedded;
pub mod niced;
pub mod pg_roles;
pub mod provision;
