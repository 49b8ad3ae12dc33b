//! Cloud Map through the AWS SDK.
