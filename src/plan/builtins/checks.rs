//! What must hold at this point of the plan: valid names, known services,
//! ports and fields a recipe can use.

use super::*;

/// RFC 1035 labels, as Kurtosis requires of service names.
pub(super) fn check_service_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        anyhow::bail!("service name '{name}' is invalid: use at most 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'");
    }
    Ok(())
}

pub(super) fn known_service(eval: &Evaluator, name: &str) -> anyhow::Result<ServiceInfo> {
    let st = ctx(eval).state.borrow();
    st.services.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = st.services.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "there is no service '{name}' at this point of the plan (services: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })
}

/// An HTTP recipe must name a port of the service.
pub(super) fn check_recipe_port(service: &ServiceInfo, recipe: &Recipe) -> anyhow::Result<()> {
    if let Recipe::Http(h) = recipe {
        if !service.ports.contains_key(&h.port_id) {
            let known: Vec<&str> = service.ports.keys().map(String::as_str).collect();
            anyhow::bail!(
                "service '{}' has no port '{}' (ports: {})",
                service.name,
                h.port_id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    Ok(())
}

pub(super) fn check_field(recipe: &Recipe, field: &str) -> anyhow::Result<()> {
    let fields = recipe.fields();
    if !fields.iter().any(|f| f == field) {
        anyhow::bail!(
            "field '{field}' is not a field of the recipe's result: use one of {}",
            fields.join(", ")
        );
    }
    Ok(())
}

/// The name of a files artifact a step makes: the one given, else
/// `STEM-N`. Unique among the artifacts this plan makes, except for files
/// copied out of a container (`store` of a task, `store_service_files`),
/// which replace an artifact of the same name, as in Kurtosis (packages
/// update an artifact step by step that way).
pub(super) fn new_artifact_name(
    eval: &Evaluator,
    name: Option<Value>,
    stem: &str,
    replaces: bool,
) -> anyhow::Result<String> {
    let c = ctx(eval);
    // Unique among the artifacts this plan makes; an artifact of the same
    // name from an earlier run is made again (and reused when its content
    // is the same).
    let name = match opt(name, |v| nonempty("name", v))? {
        Some(n) => n,
        None => {
            let st = c.state.borrow();
            (1..)
                .map(|i| format!("{stem}-{i}"))
                .find(|n| !st.declared_artifacts.contains(n))
                .expect("an unused name")
        }
    };
    check_artifact_name(&name).map_err(anyhow::Error::msg)?;
    if !replaces && c.state.borrow().declared_artifacts.contains(&name) {
        anyhow::bail!("a files artifact named '{name}' is already made by this plan; artifact names are unique");
    }
    c.state.borrow_mut().declared_artifacts.insert(name.clone());
    Ok(name)
}
