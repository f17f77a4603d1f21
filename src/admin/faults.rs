//! Faults on demand (`/api/faults`): list, replace, add and remove the rules that inject faults
//! into ingestion requests (see `crate::faults`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::error::{Admin, ApiError, ApiResult, Body};
use super::registry::Routes;
use crate::app::AppState;
use crate::faults::{Rule, RuleInput};

/// The routes of this module (merged into the admin router, behind the admin key).
pub fn routes() -> Routes {
    Routes::new()
        .get("/api/faults", list)
        .put("/api/faults", replace)
        .post("/api/faults", add)
        .delete("/api/faults", clear)
        .get("/api/faults/{id}", get_one)
        .delete("/api/faults/{id}", remove)
}

/// Validates one rule, resolving its tenant (GUID or accepted domain).
fn validate(state: &AppState, input: RuleInput) -> ApiResult<Rule> {
    let tenant = match input.tenant.as_deref().map(str::trim) {
        None => None,
        Some(name) => Some(
            state
                .store
                .resolve_tenant(name)?
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Unknown tenant '{name}': give a tenant GUID or accepted domain."
                    ))
                })?
                .id,
        ),
    };
    Rule::validate(input, tenant).map_err(ApiError::BadRequest)
}

async fn list(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({ "value": state.faults.list() }))
}

async fn get_one(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state
        .faults
        .get(&id)
        .map(Json)
        .ok_or_else(|| no_such_rule(&id))
}

async fn replace(
    _: Admin,
    State(state): State<AppState>,
    Body(inputs): Body<Vec<RuleInput>>,
) -> ApiResult<impl IntoResponse> {
    let rules = inputs
        .into_iter()
        .enumerate()
        .map(|(n, input)| {
            validate(&state, input).map_err(|e| match e {
                ApiError::BadRequest(m) => ApiError::BadRequest(format!("Rule {n}: {m}")),
                other => other,
            })
        })
        .collect::<ApiResult<Vec<Rule>>>()?;
    let rules = state.faults.replace(rules).map_err(ApiError::BadRequest)?;
    Ok(Json(json!({ "value": rules })))
}

async fn add(
    _: Admin,
    State(state): State<AppState>,
    Body(input): Body<RuleInput>,
) -> ApiResult<impl IntoResponse> {
    let rule = validate(&state, input)?;
    let rule = state.faults.add(rule).map_err(ApiError::Conflict)?;
    Ok((StatusCode::CREATED, Json(rule)))
}

async fn clear(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if state.faults.remove(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_rule(&id))
    }
}

fn no_such_rule(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "No fault rule with id '{id}' (GET /api/faults lists them)."
    ))
}
