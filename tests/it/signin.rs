//! Signing in over plain HTTP: logins per agent (one email in two workspaces), invitations
//! used once even when raced, the `__Host-` cookie over TLS, and fetch metadata deciding
//! "same origin" behind a proxy.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{status_json, GraphStandIn, Tenant, TestServer};

async fn login(server: &TestServer, email: &str, password: &str) -> (StatusCode, Value) {
    let answer = server
        .http
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    status_json(answer).await
}

async fn set_password(server: &TestServer, tenant: &Tenant, password: &str) {
    let (status, body) = server
        .put(
            &tenant.token,
            &format!("/api/v1/agents/{}/password", tenant.agent_id),
            json!({ "password": password }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn agents_of_two_workspaces_may_share_an_email_and_each_password_signs_in_its_own() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    // Both workspaces' admins are ana@acme.test.
    let first = server.provision(&graph).await;
    let second = server.provision(&graph).await;
    set_password(&server, &first, "first workspace password").await;
    // The second cannot take or block the first's sign-in, and learns nothing of it.
    set_password(&server, &second, "second workspace password").await;
    for (tenant, password) in [
        (&first, "first workspace password"),
        (&second, "second workspace password"),
    ] {
        let (status, me) = login(&server, "ANA@acme.test", password).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["workspace"]["id"], tenant.workspace_id.as_str());
        assert_eq!(me["agent"]["id"], tenant.agent_id.as_str());
    }
    // (Five attempts on one email: the most a minute allows, whichever agent they are for.)
    let (status, error) = login(&server, "ana@acme.test", "neither of the two").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["code"], "invalid_credentials");
    server.shutdown().await;
}

#[tokio::test]
async fn an_invitation_accepted_twice_at_once_signs_in_once() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let (status, invite) = server
        .post(
            &tenant.token,
            &format!("/api/v1/agents/{}/invite", tenant.agent_id),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    let code = invite["invite"].as_str().expect("code").to_owned();
    let accept = |password: &'static str| {
        let (http, url, code) = (
            server.http.clone(),
            server.url("/api/v1/auth/accept-invite"),
            code.clone(),
        );
        async move {
            let answer = http
                .post(url)
                .json(&json!({"invite": code, "password": password}))
                .send()
                .await
                .expect("accept");
            status_json(answer).await
        }
    };
    let (one, two) = tokio::join!(accept("password number one"), accept("password number two"));
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::UNAUTHORIZED],
        "{one:?} {two:?}"
    );
    let loser = if one.0 == StatusCode::OK { &two } else { &one };
    assert_eq!(loser.1["error"]["code"], "invalid_invite");
    // Exactly the winner's password signs in.
    let winner = if one.0 == StatusCode::OK {
        "password number one"
    } else {
        "password number two"
    };
    let other = if winner == "password number one" {
        "password number two"
    } else {
        "password number one"
    };
    assert_eq!(
        login(&server, "ana@acme.test", winner).await.0,
        StatusCode::OK
    );
    assert_eq!(
        login(&server, "ana@acme.test", other).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = accept("password number three").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "used");
    server.shutdown().await;
}

#[tokio::test]
async fn over_tls_the_cookie_is_host_prefixed_and_only_it_signs_in() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    set_password(&server, &tenant, "behind the proxy").await;
    let answer = server
        .http
        .post(server.url("/api/v1/auth/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": "ana@acme.test", "password": "behind the proxy"}))
        .send()
        .await
        .expect("login");
    assert_eq!(answer.status(), StatusCode::OK);
    let cookie = answer.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(cookie.starts_with("__Host-confab_session="), "{cookie}");
    for part in ["; Secure", "; Path=/", "; HttpOnly", "; SameSite=Strict"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let secret = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, secret)| secret.to_owned())
        .expect("secret");
    let me = |name: &'static str| {
        let (http, url, secret) = (
            server.http.clone(),
            server.url("/api/v1/me"),
            secret.clone(),
        );
        async move {
            http.get(url)
                .header("x-forwarded-proto", "https")
                .header("cookie", format!("{name}={secret}"))
                .send()
                .await
                .expect("me")
                .status()
        }
    };
    assert_eq!(me("__Host-confab_session").await, StatusCode::OK);
    // A cookie without the prefix could have been planted by a sibling subdomain.
    assert_eq!(me("confab_session").await, StatusCode::UNAUTHORIZED);
    server.shutdown().await;
}

#[tokio::test]
async fn fetch_metadata_decides_the_same_origin_check_behind_a_proxy() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    set_password(&server, &tenant, "through a proxy").await;
    let answer = server
        .http
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "ana@acme.test", "password": "through a proxy"}))
        .send()
        .await
        .expect("login");
    let session = answer.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    // The public origin differs from the Host the proxy passes on.
    let logout = |site: &'static str| {
        let (http, url, session) = (
            server.http.clone(),
            server.url("/api/v1/auth/logout"),
            session.clone(),
        );
        async move {
            http.post(url)
                .header("cookie", session)
                .header("origin", "https://inbox.agency.example")
                .header("sec-fetch-site", site)
                .send()
                .await
                .expect("logout")
                .status()
        }
    };
    assert_eq!(logout("cross-site").await, StatusCode::FORBIDDEN);
    assert_eq!(logout("same-site").await, StatusCode::FORBIDDEN);
    let me = server
        .http
        .get(server.url("/api/v1/me"))
        .header("cookie", session.clone())
        .send()
        .await
        .expect("me");
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "refused requests changed nothing"
    );
    assert_eq!(logout("same-origin").await, StatusCode::NO_CONTENT);
    let me = server
        .http
        .get(server.url("/api/v1/me"))
        .header("cookie", session)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "signed out");
    server.shutdown().await;
}
