//! CustomResourceDefinitions (namespaced and cluster-scoped, status subresource, schema
//! pruning and validation, cleanup on CRD deletion), events through both APIs, and leases.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{client, start, status, within};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "example.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct WidgetStatus {
    pub phase: String,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.dev", version = "v1", kind = "Gadget")]
pub struct GadgetSpec {
    pub size: i32,
}

async fn install<K: CustomResourceExt>(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = crds
        .create(&PostParams::default(), &K::crd())
        .await
        .expect("CRD created");
    let conds = created.status.expect("status").conditions.expect("conditions");
    assert!(conds.iter().any(|c| c.type_ == "Established" && c.status == "True"));
}

#[tokio::test]
async fn custom_resources_are_served_with_status_and_schema() {
    let c = start("crd").await;
    let client = client(&c).await;
    install::<Widget>(&client).await;
    install::<Gadget>(&client).await;

    let d = kube::Discovery::new(client.clone()).run().await.expect("discovery");
    assert!(
        d.groups().any(|g| g.name() == "example.dev"),
        "CRD group is discoverable"
    );

    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut w = Widget::new("w1", WidgetSpec { port: 8080, mode: None });
    w.status = Some(WidgetStatus {
        phase: "ignored on create".into(),
    });
    let created = widgets.create(&PostParams::default(), &w).await.expect("create widget");
    assert_eq!(
        created.status, None,
        "status is dropped on create when the subresource exists"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // Unknown fields are pruned; wrong types are refused with the real message.
    let junk = json!({"spec": {"port": 9090, "junk": true}});
    let patched = widgets
        .patch("w1", &PatchParams::default(), &Patch::Merge(&junk))
        .await
        .unwrap();
    assert_eq!(patched.spec.port, 9090);
    assert_eq!(patched.metadata.generation, Some(2), "spec change bumps generation");
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &kube::api::ApiResource::erase::<Widget>(&()));
    assert!(
        raw.get("w1").await.unwrap().data["spec"].get("junk").is_none(),
        "pruned"
    );
    let bad = json!({"spec": {"port": "eighty"}});
    let e = status(
        widgets
            .patch("w1", &PatchParams::default(), &Patch::Merge(&bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .starts_with(r#"Widget.example.dev "w1" is invalid: spec.port: Invalid value"#),
        "{}",
        e.message
    );

    // Strategic merge patch does not exist for custom resources.
    let e = status(
        widgets
            .patch("w1", &PatchParams::default(), &Patch::Strategic(&json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 415);

    // Status subresource.
    let st = json!({"status": {"phase": "Ready"}});
    let s = widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    assert_eq!(s.status, Some(WidgetStatus { phase: "Ready".into() }));
    assert_eq!(s.metadata.generation, Some(2), "status writes do not bump generation");

    // Custom resources only select on metadata fields.
    let e = status(
        widgets
            .list(&ListParams::default().fields("spec.port=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        r#""spec.port" is not a known field selector: only "metadata.name", "metadata.namespace""#
    );

    // Cluster-scoped.
    let gadgets: Api<Gadget> = Api::all(client.clone());
    gadgets
        .create(&PostParams::default(), &Gadget::new("g1", GadgetSpec { size: 3 }))
        .await
        .expect("cluster-scoped CR");
    assert_eq!(gadgets.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Deleting the CRD removes its resources, then the CRD, then the API.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.dev", &DeleteParams::default())
        .await
        .unwrap();
    within("the CRD to be cleaned up", async {
        while crds.get_opt("widgets.example.dev").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let e = status(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn events_recorded_through_events_v1_read_through_core_v1() {
    let c = start("events").await;
    let client = client(&c).await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sluice.dev/gateway".into(),
            instance: Some("gw-0".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("web-1".into()),
        namespace: Some("default".into()),
        uid: Some("1234".into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "Drained".into(),
        note: Some("slb drained".into()),
        action: "Drain".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.expect("publish");
    recorder.publish(&ev, &reference).await.expect("publish again (series)");

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields("involvedObject.name=web-1,involvedObject.kind=Pod");
    let events = core.list(&lp).await.expect("core events");
    assert_eq!(events.items.len(), 1, "the second publish updates the series");
    let e = &events.items[0];
    assert_eq!(e.reason.as_deref(), Some("Drained"));
    assert_eq!(e.message.as_deref(), Some("slb drained"));
    assert_eq!(e.reporting_component.as_deref(), Some("sluice.dev/gateway"));
    assert_eq!(e.count, Some(2));
    assert!(core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn leases_create_renew_conflict() {
    let c = start("lease").await;
    let leases: Api<Lease> = Api::namespaced(client(&c).await, "kube-system");
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "sluice-leader"},
        "spec": {"holderIdentity": "gw-0", "leaseDurationSeconds": 15}}))
    .unwrap();
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("gw-1".into());
    leases
        .replace("sluice-leader", &PostParams::default(), &renewed)
        .await
        .expect("renew");
    let e = status(
        leases
            .replace("sluice-leader", &PostParams::default(), &renewed)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409, "a second writer with the old version loses");
    let d = leases.delete("sluice-leader", &DeleteParams::default()).await.unwrap();
    assert!(d.is_right(), "leases answer a Success Status on delete");
}
