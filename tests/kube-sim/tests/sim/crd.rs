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

use crate::common::{client, fails, raw, start, summary, within};

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

/// Installs the Widget CRD; answers widgets in `default`.
async fn widgets(client: &kube::Client) -> Api<Widget> {
    install::<Widget>(client).await;
    Api::namespaced(client.clone(), "default")
}

/// A cluster with the Widget CRD: the cluster (kept alive by the caller), a client, widgets.
async fn widget_cluster(name: &str) -> (kube_sim::Cluster, kube::Client, Api<Widget>) {
    let c = start(name).await;
    let client = client(&c).await;
    let widgets = widgets(&client).await;
    (c, client, widgets)
}

fn widget(name: &str) -> Widget {
    Widget::new(name, WidgetSpec { port: 1, mode: None })
}

/// A widget held by a finalizer once deleted.
fn held_widget(name: &str) -> Widget {
    let mut w = widget(name);
    w.metadata.finalizers = Some(vec!["example.dev/hold".into()]);
    w
}

async fn create_widget(widgets: &Api<Widget>, w: Widget) -> Widget {
    widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("widget created")
}

/// Waits until the CRD `name` is cleaned up and removed.
async fn crd_gone(crds: &Api<CustomResourceDefinition>, name: &str) {
    within("the CRD to be cleaned up", async {
        while crds.get_opt(name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
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
    let e = fails(widgets.patch("w1", &PatchParams::default(), &Patch::Merge(&bad))).await;
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .starts_with(r#"Widget.example.dev "w1" is invalid: spec.port: Invalid value"#),
        "{}",
        e.message
    );

    // Strategic merge patch does not exist for custom resources.
    let e = fails(widgets.patch("w1", &PatchParams::default(), &Patch::Strategic(&json!({})))).await;
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
    let e = fails(widgets.list(&ListParams::default().fields("spec.port=1"))).await;
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
    crd_gone(&crds, "widgets.example.dev").await;
    let e = fails(widgets.list(&ListParams::default())).await;
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
    // The core count is the v1 deprecatedCount (which the recorder leaves unset), not the series'.
    assert_eq!(e.count, None);
    assert_eq!(e.series.as_ref().and_then(|s| s.count), Some(2));
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
    let e = fails(leases.replace("sluice-leader", &PostParams::default(), &renewed)).await;
    assert_eq!(e.code, 409, "a second writer with the old version loses");
    let d = leases.delete("sluice-leader", &DeleteParams::default()).await.unwrap();
    assert!(d.is_right(), "leases answer a Success Status on delete");
}

#[tokio::test]
async fn custom_resource_delete_answers_a_status_unless_held() {
    let (_c, client, widgets) = widget_cluster("crd-delete").await;

    // Removed at once: a `Status` (the custom resource store has no ReturnDeletedObject).
    let created = create_widget(&widgets, widget("gone")).await;
    let s = widgets
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .expect("a custom resource removed at once answers a Status");
    assert_eq!(s.status, Some(kube::core::response::StatusSummary::Success));
    let d = s.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("gone", "example.dev", "widgets")
    );
    assert_eq!(Some(d.uid), created.metadata.uid);
    assert!(widgets.get_opt("gone").await.unwrap().is_none());

    // Held by a finalizer: the updated object (Store.Delete returns it with the deletion marked).
    create_widget(&widgets, held_widget("held")).await;
    let marked = widgets
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object, while a finalizer holds it");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(marked.metadata.generation, Some(2), "markAsDeleting bumps generation");
    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(widgets.get_opt("held").await.unwrap().is_none());

    // The CRD's first delete only marks it (REST.Delete): cleanup finalizer ensured, even when
    // removed before, Terminating condition, no grace period, no generation bump.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.example.dev",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let crd = crds
        .delete("widgets.example.dev", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a CRD's delete answers the marked CRD");
    assert!(crd.metadata.deletion_timestamp.is_some());
    assert_eq!(crd.metadata.deletion_grace_period_seconds, None);
    assert_eq!(crd.metadata.generation, Some(1));
    assert_eq!(
        crd.metadata.finalizers,
        Some(vec!["customresourcecleanup.apiextensions.k8s.io".to_string()])
    );
    let terminating = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Terminating")
        .expect("Terminating condition");
    assert_eq!(
        (terminating.status.as_str(), terminating.reason.as_deref()),
        ("True", Some("InstanceDeletionPending"))
    );
    crd_gone(&crds, "widgets.example.dev").await;
}

#[tokio::test]
async fn put_without_resource_version_is_invalid_for_custom_resources_and_crds() {
    let (_c, client, widgets) = widget_cluster("crd-uncond").await;
    create_widget(&widgets, widget("w")).await;
    let mut cur = widgets.get("w").await.unwrap();
    cur.metadata.resource_version = None;
    cur.spec.port = 2;
    let want = r#"widgets.example.dev "w" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#;
    let e = fails(widgets.replace("w", &PostParams::default(), &cur)).await;
    assert_eq!(summary(&e), (422, "Invalid", want));
    let d = e.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("w", "example.dev", "widgets")
    );
    assert_eq!(d.causes.len(), 1);
    assert_eq!(
        (
            d.causes[0].reason.as_str(),
            d.causes[0].field.as_str(),
            d.causes[0].message.as_str()
        ),
        (
            "FieldValueInvalid",
            "metadata.resourceVersion",
            "Invalid value: 0x0: must be specified for an update"
        )
    );
    // The status subresource's strategy does not allow it either.
    let e = fails(widgets.replace_status("w", &PostParams::default(), &cur)).await;
    assert_eq!((e.code, e.message.as_str()), (422, want));
    assert_eq!(widgets.get("w").await.unwrap().spec.port, 1, "nothing was written");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds.get("widgets.example.dev").await.unwrap();
    crd.metadata.resource_version = None;
    let e = fails(crds.replace("widgets.example.dev", &PostParams::default(), &crd)).await;
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            422,
            r#"customresourcedefinitions.apiextensions.k8s.io "widgets.example.dev" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#
        )
    );

    // Leases (like pods, namespaces and events) allow the unconditional update.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})).unwrap();
    leases.create(&PostParams::default(), &l).await.unwrap();
    let mut unconditional: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "b"}})).unwrap();
    unconditional.metadata.resource_version = None;
    let replaced = leases
        .replace("l", &PostParams::default(), &unconditional)
        .await
        .expect("unconditional lease update");
    assert_eq!(replaced.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn generation_counts_every_change_outside_metadata_without_a_status_subresource() {
    let c = start("crd-gen").await;
    let client = client(&c).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "doohickeys.example.dev"},
        "spec": {"group": "example.dev", "scope": "Namespaced",
                 "names": {"plural": "doohickeys", "singular": "doohickey", "kind": "Doohickey",
                           "listKind": "DoohickeyList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                   "properties": {"spec": open, "status": open}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("example.dev", "v1", "Doohickey"),
        "doohickeys",
    );
    let things: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut obj = kube::api::DynamicObject::new("d", &ar);
    obj.data = json!({"spec": {"size": 1}});
    let created = things.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let pp = PatchParams::default();
    let gen = |o: &kube::api::DynamicObject| o.metadata.generation;

    // No status subresource: status is part of the object and bumps generation.
    let o = things
        .patch("d", &pp, &Patch::Merge(&json!({"status": {"phase": "Ready"}})))
        .await
        .unwrap();
    assert_eq!(o.data["status"]["phase"], "Ready");
    assert_eq!(
        gen(&o),
        Some(2),
        "a status change bumps generation without the subresource"
    );
    let o = things
        .patch("d", &pp, &Patch::Merge(&json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(gen(&o), Some(2), "metadata changes do not");
    let o = things
        .patch("d", &pp, &Patch::Merge(&json!({"spec": {"size": 2}})))
        .await
        .unwrap();
    assert_eq!(gen(&o), Some(3));

    // With the subresource, status written through the main resource is dropped: no bump.
    let widgets = widgets(&client).await;
    create_widget(&widgets, widget("w")).await;
    let w = widgets
        .patch("w", &pp, &Patch::Merge(&json!({"status": {"phase": "Ready"}})))
        .await
        .unwrap();
    assert_eq!((w.status, w.metadata.generation), (None, Some(1)));
}

#[tokio::test]
async fn custom_resource_errors_name_kind_and_media_types_as_upstream() {
    let (_c, client, widgets) = widget_cluster("crd-errors").await;
    create_widget(&widgets, widget("w")).await;

    // Invalid: the message qualifies the kind, the details carry it bare.
    let e = fails(widgets.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"port": "eighty"}})),
    ))
    .await;
    assert!(
        e.message
            .starts_with(r#"Widget.example.dev "w" is invalid: spec.port: Invalid value"#),
        "{}",
        e.message
    );
    let d = e.details.expect("details");
    assert_eq!((d.kind.as_str(), d.group.as_str()), ("Widget", "example.dev"));

    // A patch type custom resources do not have is refused before the object is looked up.
    let (code, _, body) = raw(
        &client,
        "PATCH",
        "/apis/example.dev/v1/namespaces/default/widgets/missing",
        Some("application/strategic-merge-patch+json"),
        "{}",
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(
        body["message"],
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    assert!(body.get("details").is_none(), "{body}");

    // /status of a custom resource writes only status (its metadata changes are dropped).
    let s = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.status, Some(WidgetStatus { phase: "Ready".into() }));
    assert_eq!(s.metadata.labels, None);
}

#[tokio::test]
async fn creating_while_the_crd_terminates_is_method_not_allowed() {
    let (_c, client, widgets) = widget_cluster("crd-terminating").await;
    create_widget(&widgets, held_widget("held")).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.dev", &DeleteParams::default())
        .await
        .unwrap();

    // The CRD handler refuses the verb before the create handler reads anything.
    let e = fails(widgets.create(&PostParams::default(), &widget("late"))).await;
    assert_eq!(
        summary(&e),
        (
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating"
        )
    );
    let d = e.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("", "example.dev", "widgets")
    );
    let (code, _, body) = raw(
        &client,
        "POST",
        "/apis/example.dev/v1/namespaces/default/widgets",
        Some("application/yaml"),
        "metadata: {name: x}",
    )
    .await;
    assert_eq!((code.as_u16(), &body["reason"]), (405, &json!("MethodNotAllowed")));
    // Other verbs are still served.
    widgets.get("held").await.expect("get while terminating");
}
