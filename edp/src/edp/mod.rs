//! EDP
