//! Transport and authentication: envelope, JWT claims, 401 subcodes, 404/400/500 paths, query merge.

use clearml_doubles::clearml::ClearmlDouble;
use serde_json::{Value, json};

use super::common::{Api, Auth, assert_error, code, is_hex32, jwt_claims, setup};

#[tokio::test]
async fn login_issues_a_jwt_and_bearer_calls_get_the_envelope() {
    let double = ClearmlDouble::start().await.expect("double starts");
    let api = Api::new(&double);
    let (key, secret) = double.credentials();

    // Login the way the SDK does: GET, Basic auth, no body, expiration in the query string.
    let (status, env, headers) = api
        .raw(
            reqwest::Method::GET,
            "/auth.login?expiration_sec=120",
            &Auth::Basic(key.clone(), secret.clone()),
            None,
        )
        .await
        .expect("login reaches the double");
    assert_eq!(status, 200, "{env}");
    assert_eq!(
        headers.get("server").map(|v| v.to_str().ok()),
        Some(Some("clearml"))
    );
    let cookie = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        cookie.starts_with("clearml_token_basic="),
        "cookie: {cookie}"
    );
    let token = env["data"]["token"].as_str().expect("token").to_string();
    let claims = jwt_claims(&token);
    assert_eq!(claims["api_version"], "2.34");
    assert_eq!(claims["server_version"], "2.3.0");
    assert_eq!(claims["feature_set"], "basic");
    assert_eq!(claims["identity"]["user"], "__tests__");
    assert_eq!(
        claims["identity"]["company"],
        "d1bd92a3b039400cbafc60a7a5b1e52b"
    );
    let lifetime =
        claims["exp"].as_i64().unwrap_or_default() - claims["iat"].as_i64().unwrap_or_default();
    assert_eq!(lifetime, 120);
    let default_token = api.login(&key, &secret).await;
    let claims = jwt_claims(&default_token);
    let lifetime =
        claims["exp"].as_i64().unwrap_or_default() - claims["iat"].as_i64().unwrap_or_default();
    assert_eq!(lifetime, 2_592_000);

    // A Bearer call with a versioned path, GET with a JSON body and the SDK's stray "method" key.
    let (status, env, _) = api
        .raw(
            reqwest::Method::GET,
            "/v2.23/queues.get_all",
            &Auth::Bearer(token.clone()),
            Some((
                "application/json",
                br#"{"name": "^default$", "only_fields": ["id", "name"], "method": "get"}"#
                    .to_vec(),
            )),
        )
        .await
        .expect("call reaches the double");
    assert_eq!(status, 200, "{env}");
    let meta = &env["meta"];
    assert!(is_hex32(&meta["id"]), "{meta}");
    assert_eq!(meta["trx"], meta["id"]);
    assert_eq!(
        meta["endpoint"],
        json!({"name": "queues.get_all", "requested_version": "2.23", "actual_version": "2.4"})
    );
    assert_eq!(meta["result_msg"], "OK");
    assert_eq!(meta["error_stack"], Value::Null);
    assert_eq!(meta["error_data"], json!({}));
    let queues = env["data"]["queues"].as_array().expect("queues list");
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0]["name"], "default");
    assert_eq!(
        queues[0].as_object().map(|o| o.len()),
        Some(2),
        "projection: {}",
        queues[0]
    );

    // Basic works on any endpoint; no version means the max version.
    let (status, env) = api
        .call("/server.info/", &Auth::Basic(key, secret), json!({}))
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["meta"]["endpoint"]["requested_version"], "2.34");
    assert_eq!(env["data"]["api_version"], "2.34");

    // debug.ping needs no credentials and echoes the body.
    let (status, env) = api.call("/debug.ping", &Auth::None, json!({"x": 1})).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"], json!({"x": 1, "msg": "ClearML server"}));

    // The session cookie alone authenticates.
    let resp = api
        .http
        .post(format!("{}/server.info", api.base))
        .header("Cookie", format!("clearml_token_basic={token}"))
        .send()
        .await
        .expect("cookie call");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn authentication_failures_use_the_documented_codes() {
    let (double, api, bearer) = setup().await;
    let (key, secret) = double.credentials();

    let (status, env) = api.call("/queues.get_all", &Auth::None, json!({})).await;
    assert_error(status, &env, 401, 20);
    assert_eq!(
        env["meta"]["result_msg"],
        "Unauthorized (missing credentials)"
    );

    let (status, env) = api
        .call(
            "/queues.get_all",
            &Auth::Basic(key.clone(), "wrong".into()),
            json!({}),
        )
        .await;
    assert_error(status, &env, 401, 22);
    assert_eq!(
        env["meta"]["result_msg"],
        "Unauthorized (invalid credentials) (failed to locate provided credentials)"
    );
    let (status, env) = api
        .call(
            "/auth.login",
            &Auth::Basic("nobody".into(), secret.clone()),
            json!({}),
        )
        .await;
    assert_error(status, &env, 401, 22);

    let (status, env) = api
        .call(
            "/queues.get_all",
            &Auth::Bearer("not.a.token".into()),
            json!({}),
        )
        .await;
    assert_error(status, &env, 401, 30);

    let resp = api
        .http
        .post(format!("{}/queues.get_all", api.base))
        .header("Authorization", "Digest abc")
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status().as_u16(), 401);
    let env: Value = resp.json().await.expect("json");
    assert_eq!(code(&env), (401, 10));

    // Expired tokens: 401/30, then a fresh login works again.
    let (status, _) = api.call("/queues.get_all", &bearer, json!({})).await;
    assert_eq!(status, 200);
    double.faults().expire_tokens();
    let (status, env) = api.call("/queues.get_all", &bearer, json!({})).await;
    assert_error(status, &env, 401, 30);
    assert_eq!(
        env["meta"]["result_msg"],
        "Invalid token (invalid jwt token): reason=Signature has expired"
    );
    let fresh = Auth::Bearer(api.login(&key, &secret).await);
    let (status, _) = api.call("/queues.get_all", &fresh, json!({})).await;
    assert_eq!(status, 200);

    // Expiry follows the server clock too.
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/auth.login?expiration_sec=30",
            &Auth::Basic(key.clone(), secret.clone()),
            None,
        )
        .await
        .expect("login");
    assert_eq!(status, 200);
    let short = Auth::Bearer(env["data"]["token"].as_str().expect("token").to_string());
    double.advance_clock(chrono::Duration::seconds(31));
    let (status, env) = api.call("/queues.get_all", &short, json!({})).await;
    assert_error(status, &env, 401, 30);
    double.set_clock_offset(chrono::Duration::zero());

    // auth.logout revokes the token it was called with.
    let (status, _) = api.call("/auth.logout", &fresh, json!({})).await;
    assert_eq!(status, 200);
    let (status, env) = api.call("/queues.get_all", &fresh, json!({})).await;
    assert_error(status, &env, 401, 30);
    assert_eq!(env["meta"]["result_msg"], "Invalid token (revoked token)");

    // expiration_sec above one year is a validation error.
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/auth.login?expiration_sec=31536001",
            &Auth::Basic(key, secret),
            None,
        )
        .await
        .expect("login");
    assert_error(status, &env, 400, 12);
}

#[tokio::test]
async fn transport_errors_follow_the_server() {
    let (_double, api, bearer) = setup().await;

    // Unknown endpoint: 404 even without credentials (routing comes before auth).
    let (status, env) = api.call("/queues.nope", &Auth::None, json!({})).await;
    assert_error(status, &env, 404, 0);
    assert_eq!(
        env["meta"]["result_msg"],
        "Unable to find endpoint for name queues.nope and version 2.34"
    );
    // An endpoint newer than the requested version is unknown for it.
    let (status, env) = api.call("/v2.1/queues.get_all", &bearer, json!({})).await;
    assert_error(status, &env, 404, 0);

    // Malformed path.
    let (status, env) = api.call("/tasks", &bearer, json!({})).await;
    assert_error(status, &env, 400, 0);
    assert_eq!(env["meta"]["result_msg"], "Invalid request path /tasks");
    assert_eq!(env["meta"]["endpoint"]["name"], "");

    // A JSON array body is 500, invalid JSON is 400.
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/queues.get_all",
            &bearer,
            Some(("application/json", b"[1,2]".to_vec())),
        )
        .await
        .expect("call");
    assert_error(status, &env, 500, 0);
    assert_eq!(env["meta"]["result_msg"], "Data should be a dict");
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/queues.get_all",
            &bearer,
            Some(("application/json", b"{nope".to_vec())),
        )
        .await
        .expect("call");
    assert_error(status, &env, 400, 0);

    // Query parameters are merged into the body.
    let (status, env, _) = api
        .raw(
            reqwest::Method::GET,
            "/queues.get_all?name=%5Edefault%24&only_fields=id&only_fields=name",
            &bearer,
            None,
        )
        .await
        .expect("call");
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["queues"].as_array().map(Vec::len), Some(1));

    // A missing required field is a 400/12 validation error.
    let (status, env) = api.call("/tasks.get_by_id", &bearer, json!({})).await;
    assert_error(status, &env, 400, 12);

    // X-Clearml-Trx is echoed.
    let resp = api
        .http
        .post(format!("{}/debug.ping", api.base))
        .header("X-Clearml-Trx", "my-trx")
        .send()
        .await
        .expect("ping");
    let env: Value = resp.json().await.expect("json");
    assert_eq!(env["meta"]["trx"], "my-trx");
}
