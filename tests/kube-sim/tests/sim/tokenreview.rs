//! `authentication.k8s.io/v1` TokenReview as kube-apiserver answers it: `201` with the
//! review's status, never a failed request for a bad token.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::common::*;

fn review(token: &str, audiences: &[&str]) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: (!audiences.is_empty()).then(|| audiences.iter().map(|a| a.to_string()).collect()),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_service_account_token_is_reviewed_with_its_user_groups_and_audiences() {
    let cluster = start("tokenreview").await;
    let api: Api<TokenReview> = Api::all(client(&cluster).await);
    let token = cluster.issue_service_account_token("shop", "deployer", &["sluice"]);

    let ok = api
        .create(&PostParams::default(), &review(&token, &["sluice"]))
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:shop:deployer"));
    assert_eq!(
        user.groups.unwrap(),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:shop",
            "system:authenticated"
        ]
    );
    assert!(user.uid.is_some_and(|u| !u.is_empty()));
    assert_eq!(status.audiences.unwrap(), ["sluice"]);
    assert_eq!(ok.spec.token.as_deref(), Some(token.as_str()), "the review is echoed");

    // Another audience, an unknown token: answered (201), not authenticated, with the error.
    for (t, aud, says) in [
        (token.as_str(), "other", "token audiences"),
        ("no-such-token", "sluice", "invalid bearer token"),
    ] {
        let r = api.create(&PostParams::default(), &review(t, &[aud])).await.unwrap();
        let s = r.status.unwrap();
        assert_ne!(s.authenticated, Some(true));
        assert!(s.error.unwrap().contains(says));
        assert!(s.user.unwrap().username.is_none());
    }
    // A token issued for the API server's own audience passes a review naming none.
    let plain = cluster.issue_service_account_token("shop", "web", &[]);
    let r = api.create(&PostParams::default(), &review(&plain, &[])).await.unwrap();
    let s = r.status.unwrap();
    assert_eq!(s.authenticated, Some(true));
    assert!(s.audiences.is_none(), "audiences are echoed only when asked for");

    // An empty token is a bad request.
    let e = fails(api.create(&PostParams::default(), &review("", &[]))).await;
    assert_eq!(
        summary(&e),
        (400, "BadRequest", "token is required for TokenReview in authentication")
    );
}
