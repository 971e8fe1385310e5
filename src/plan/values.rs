//! The Starlark values of Kurtosis' types. Each wraps an owned model type
//! (see [`super::model`]), so a value holds no Starlark references and the
//! plan outlives the interpreter. Attributes are read from the model's
//! fields (`service.ports["http"].number`, `config.image`).

use super::model;
use allocative::Allocative;
use starlark::environment::Methods;
use starlark::starlark_simple_value;
use starlark::values::{
    Heap, NoSerialize, ProvidesStaticType, StarlarkPagablePanic, StarlarkValue, Value,
};
use starlark_derive::starlark_value;
use std::fmt;

/// A service as `plan.add_service` returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub hostname: String,
    pub ip_address: String,
    pub ports: std::collections::BTreeMap<String, ServicePort>,
}

/// A port of a service: its `PortSpec` plus the `url` it answers at.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServicePort {
    pub number: u16,
    pub transport_protocol: String,
    pub application_protocol: String,
    pub wait: Option<super::duration::GoDuration>,
    pub url: String,
}

impl ServiceInfo {
    /// A service at `ip` (a future reference during interpretation); its
    /// hostname is its name.
    pub fn new(
        name: &str,
        ip: &str,
        ports: &std::collections::BTreeMap<String, model::PortSpec>,
    ) -> Self {
        let ip = ip.to_string();
        ServiceInfo {
            name: name.into(),
            hostname: name.into(),
            ports: ports
                .iter()
                .map(|(id, p)| {
                    let scheme = if p.application_protocol.is_empty() {
                        String::new()
                    } else {
                        format!("{}://", p.application_protocol)
                    };
                    (
                        id.clone(),
                        ServicePort {
                            number: p.number,
                            transport_protocol: p.transport_protocol.clone(),
                            application_protocol: p.application_protocol.clone(),
                            wait: p.wait.clone(),
                            url: format!("{scheme}{name}:{}", p.number),
                        },
                    )
                })
                .collect(),
            ip_address: ip,
        }
    }
}

/// The attributes a value has: its fields, as Kurtosis shows them. An
/// argument that was not given (null; for `sparse` types, an empty list or
/// dict too) is no attribute, so `hasattr(config, "public_ports")` is
/// false for a `ServiceConfig` without them, as in Kurtosis.
fn json_fields<T: serde::Serialize>(
    v: &T,
    sparse: bool,
) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(mut o)) => {
            o.retain(|_, x| match x {
                serde_json::Value::Null => false,
                serde_json::Value::Object(m) => !(sparse && m.is_empty()),
                serde_json::Value::Array(a) => !(sparse && a.is_empty()),
                _ => true,
            });
            o
        }
        _ => Default::default(),
    }
}

fn json_attr<'v, T: serde::Serialize>(
    v: &T,
    attr: &str,
    sparse: bool,
    heap: Heap<'v>,
) -> Option<Value<'v>> {
    json_fields(v, sparse).remove(attr).map(|x| heap.alloc(x))
}

fn json_dir<T: serde::Serialize>(v: &T, sparse: bool) -> Vec<String> {
    json_fields(v, sparse).keys().cloned().collect()
}

macro_rules! record_value {
    ($value:ident, $model:ty, $type_name:literal) => {
        record_value!($value, $model, $type_name, false);
    };
    ($value:ident, $model:ty, $type_name:literal, $sparse:literal) => {
        #[derive(
            Debug, Clone, ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic,
        )]
        pub struct $value(#[allocative(skip)] pub $model);
        starlark_simple_value!($value);

        impl fmt::Display for $value {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let json = serde_json::to_string(&self.0).unwrap_or_default();
                write!(f, "{}({})", $type_name, json)
            }
        }

        #[starlark_value(type = $type_name)]
        impl<'v> StarlarkValue<'v> for $value {
            fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
                json_attr(&self.0, attribute, $sparse, heap)
            }

            fn dir_attr(&self) -> Vec<String> {
                json_dir(&self.0, $sparse)
            }
        }
    };
}

record_value!(PortSpecValue, model::PortSpec, "PortSpec");
record_value!(UserValue, model::User, "User");
record_value!(ExecRecipeValue, model::ExecRecipe, "ExecRecipe");
record_value!(HttpRecipeValue, model::HttpRecipe, "HttpRequestRecipe");
record_value!(ReadyConditionValue, model::ReadyCondition, "ReadyCondition");
record_value!(NixBuildSpecValue, model::NixBuildSpec, "NixBuildSpec");
record_value!(ImageSpecValue, model::ImageSpec, "ImageSpec");
/// `ServiceConfig`: its ports are `PortSpec`s; its other attributes are
/// the arguments given.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub struct ServiceConfigValue(#[allocative(skip)] pub model::ServiceConfig);
starlark_simple_value!(ServiceConfigValue);

impl fmt::Display for ServiceConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(&self.0).unwrap_or_default();
        write!(f, "ServiceConfig({json})")
    }
}

#[starlark_value(type = "ServiceConfig")]
impl<'v> StarlarkValue<'v> for ServiceConfigValue {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        let ports = match attribute {
            "ports" => &self.0.ports,
            "public_ports" => &self.0.public_ports,
            _ => return json_attr(&self.0, attribute, true, heap),
        };
        if ports.is_empty() {
            return None;
        }
        let items: Vec<(&str, Value<'v>)> = ports
            .iter()
            .map(|(k, p)| (k.as_str(), heap.alloc(PortSpecValue(p.clone()))))
            .collect();
        Some(heap.alloc(starlark::values::dict::AllocDict(items)))
    }

    fn dir_attr(&self) -> Vec<String> {
        json_dir(&self.0, true)
    }
}
record_value!(DirectoryValue, model::FilesSource, "Directory");
record_value!(StoreSpecValue, model::StoreSpec, "StoreSpec");
record_value!(TolerationValue, model::Toleration, "Toleration");
record_value!(GpuConfigValue, model::GpuConfig, "GpuConfig");
record_value!(ImageBuildSpecValue, model::ImageSource, "ImageBuildSpec");

/// `Service`: `.ports` is a dict of port id → port (with `.number`, `.url`).
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub struct ServiceValue(#[allocative(skip)] pub ServiceInfo);
starlark_simple_value!(ServiceValue);

impl fmt::Display for ServiceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Service(name={:?})", self.0.name)
    }
}

record_value!(ServicePortValue, ServicePort, "Port");

#[starlark_value(type = "Service")]
impl<'v> StarlarkValue<'v> for ServiceValue {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "name" => Some(heap.alloc(self.0.name.as_str())),
            "hostname" => Some(heap.alloc(self.0.hostname.as_str())),
            "ip_address" => Some(heap.alloc(self.0.ip_address.as_str())),
            "ports" => {
                let items: Vec<(&str, Value<'v>)> = self
                    .0
                    .ports
                    .iter()
                    .map(|(k, p)| (k.as_str(), heap.alloc(ServicePortValue(p.clone()))))
                    .collect();
                Some(heap.alloc(starlark::values::dict::AllocDict(items)))
            }
            _ => None,
        }
    }

    fn dir_attr(&self) -> Vec<String> {
        ["hostname", "ip_address", "name", "ports"]
            .map(String::from)
            .to_vec()
    }
}

/// The `plan` object: its methods record instructions (see `builtins`).
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub struct PlanValue;
starlark_simple_value!(PlanValue);

impl fmt::Display for PlanValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plan")
    }
}

starlark::methods_static!(PLAN_METHODS = super::builtins::plan_methods);

#[starlark_value(type = "plan")]
impl<'v> StarlarkValue<'v> for PlanValue {
    fn get_methods() -> Option<&'static Methods> {
        Some(PLAN_METHODS.methods())
    }
}
