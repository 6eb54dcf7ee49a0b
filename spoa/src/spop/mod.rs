//! The SPOP wire protocol (HAProxy's SPOE, protocol version 2.0): placeholder, being written.
