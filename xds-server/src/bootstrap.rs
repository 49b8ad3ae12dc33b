//! The gRPC xDS bootstrap (gRFC A27) a client in this task needs: the server, `xds_v3`, and the
//! node with its zone, so that it gets its own zone's answer.

use serde_json::{Value, json};

/// The bootstrap JSON: one plaintext server `server_uri` (gRPC's `insecure` channel
/// credentials; the server speaks plaintext), `server_features: ["xds_v3"]`, and the node
/// `node_id` in `region` and `zone` (a name or an AZ ID; `None` leaves the zone out, and the
/// client gets the zone-agnostic answer).
pub fn bootstrap(
    server_uri: &str,
    node_id: &str,
    region: Option<&str>,
    zone: Option<&str>,
) -> Value {
    let mut locality = serde_json::Map::new();
    if let Some(region) = region {
        locality.insert("region".into(), json!(region));
    }
    if let Some(zone) = zone {
        locality.insert("zone".into(), json!(zone));
    }
    json!({
        "xds_servers": [{
            "server_uri": server_uri,
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": node_id,
            "locality": locality,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_names_the_server_and_the_zone() {
        let value = bootstrap(
            "xds.prod.internal:18000",
            "task-1",
            Some("eu-central-1"),
            Some("euc1-az1"),
        );
        assert_eq!(
            value["xds_servers"][0]["server_uri"],
            "xds.prod.internal:18000"
        );
        assert_eq!(value["xds_servers"][0]["server_features"][0], "xds_v3");
        assert_eq!(
            value["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        assert_eq!(value["node"]["id"], "task-1");
        assert_eq!(value["node"]["locality"]["zone"], "euc1-az1");
        let zoneless = bootstrap("x:1", "n", None, None);
        assert!(zoneless["node"]["locality"].as_object().unwrap().is_empty());
    }
}
