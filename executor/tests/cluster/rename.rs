//! Issue 14: the Secret of `asSecret` variables was `vantiq-<name>-envsecret`
//! and is now a `vantiq-<name>-secret-<n>` (the guide's naming rule). An
//! installation deployed under the old name moves over on its next deploy.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8sworker_core::labels;
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{self, Action, HealthState, Outcome};
use k8sworker_testsupport::{eventually, with_temp_ns};
use serde_json::{Value, json};

use crate::support::{Fixture, actions, health_state, outcomes};

const OLD: &str = "vantiq-app-envsecret";
const NEW: &str = "vantiq-app-secret-0";

/// `plan` as the release before rendered it: the variables' Secret named
/// `vantiq-app-envsecret` (its name, its owner record, the StatefulSet's
/// references to it), and other bytes, so other spec and config hashes.
fn as_the_release_before(plan: &v1::Plan) -> v1::Plan {
    let mut plan = plan.clone();
    plan.id = format!("{}-previous-release", plan.id);
    for step in &mut plan.steps {
        let component = step.component.as_mut().unwrap();
        component.name = component.name.replace(NEW, OLD);
        let text = String::from_utf8(step.object_json.clone()).unwrap();
        let mut object: Value = serde_json::from_str(&text.replace(NEW, OLD)).unwrap();
        if text.contains(NEW) {
            object["metadata"]["annotations"][labels::SPEC_HASH] =
                json!(format!("{}-previous-release", component.kind));
        }
        if let Some(template) = object.pointer_mut("/spec/template/metadata/annotations") {
            template[labels::CONFIG_HASH] = json!("previous-release");
        }
        step.object_json = serde_json::to_vec(&object).unwrap();
    }
    plan
}

/// The Secrets the pods' variable `TOKEN` comes from.
fn token_secrets(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|pod| {
            let env = pod.spec.as_ref()?.containers[0].env.as_ref()?;
            let token = env.iter().find(|var| var.name == "TOKEN")?;
            Some(
                token
                    .value_from
                    .as_ref()?
                    .secret_key_ref
                    .as_ref()?
                    .name
                    .clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_deploy_moves_the_former_env_secret_and_rolls_the_pods() {
    with_temp_ns("exec-rename", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = k8sworker_testsupport::plans::deploy_request(
            "app",
            &ns,
            1,
            &[json!({"type": "environmentVariable", "name": "TOKEN", "value": "t0ken", "asSecret": true})],
        );

        // Deployed by the release before: our labels, owner record and field
        // manager, under the old name.
        let old = as_the_release_before(&f.plan(&request, Operation::Deploy).await);
        let applied = f.apply(&old, true).await.expect("the old release's deploy");
        assert_eq!(applied.ack.error, None);
        assert_eq!(health_state(&applied), HealthState::Ready);
        let owned = f.owned("app").await;
        assert!(owned.contains_key(&("Secret".into(), OLD.into())), "{owned:?}");
        assert!(!owned.contains_key(&("Secret".into(), NEW.into())), "{owned:?}");
        assert_eq!(token_secrets(&f.pods("app").await), [OLD]);

        // The next deploy: the new Secret first, then the StatefulSet, the old
        // Secret deleted last.
        let moved = f.plan(&request, Operation::Deploy).await;
        let writes: Vec<String> = actions(&moved)
            .into_iter()
            .filter(|(action, _)| *action != Action::Noop)
            .map(|(action, component)| format!("{action:?} {component}"))
            .collect();
        assert_eq!(
            writes,
            [
                format!("Create Secret {NEW}"),
                "Update StatefulSet app".to_owned(),
                format!("Delete Secret {OLD}"),
            ]
        );
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("the move to the new Secret name");
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(
            calls.writes(),
            3 + 1,
            "create, update, delete and the Event: {calls:?}"
        );
        let owned = f.owned("app").await;
        assert!(owned.contains_key(&("Secret".into(), NEW.into())), "{owned:?}");
        assert!(!owned.contains_key(&("Secret".into(), OLD.into())), "{owned:?}");
        // The pods rolled onto the new Secret.
        eventually("the pods use the new Secret", Duration::from_secs(60), || async {
            (token_secrets(&f.pods("app").await) == [NEW]).then_some(())
        })
        .await;

        // Unchanged: nothing written.
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("unchanged re-deploy after the move");
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(outcomes(&applied), [Outcome::Unchanged].into());
    })
    .await;
}
