//! `/searches`: saved searches — a name for a page URL with its filters — listed pinned
//! first, renamed, pinned, deleted; and [`save_form`], the "Save this search" form list
//! pages carry. The URL is the search (`store::saved`), so saving one is a POST of the
//! page's own path and query.

use axum::Form;
use axum::Json;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::format::time;
use super::layout::{Nav, csrf_field, page as shell};
use super::{AppState, WebError};
use crate::event::{Command, CommandReply};
use crate::store::saved::{self, SavedSearch};

/// `GET /searches`.
pub async fn list(State(state): State<AppState>) -> Result<Markup, WebError> {
    let searches = state.reads().run(saved::searches).await?;
    Ok(render(&searches))
}

#[derive(Serialize)]
pub struct SearchesResponse {
    pub searches: Vec<SavedSearch>,
}

/// `GET /api/searches`: `{searches: [{id, name, url, pinned, created_at, updated_at}]}`,
/// pinned first.
pub async fn api(State(state): State<AppState>) -> Result<Json<SearchesResponse>, ApiError> {
    let searches = state.reads().run(saved::searches).await?;
    Ok(Json(SearchesResponse { searches }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateForm {
    pub name: String,
    pub url: String,
}

/// `POST /searches` (`name`, `url`): saves the search; 303 to the list.
pub async fn create(
    State(state): State<AppState>,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Form(form) = form?;
    let name = saved::check_name(&form.name).map_err(field("name"))?;
    let url = saved::check_url(&form.url).map_err(field("url"))?;
    let reply = command(&state, Command::CreateSearch { name, url }).await?;
    Ok(match reply {
        CommandReply::Id(id) => Redirect::to(&format!("/searches#search-{id}")),
        CommandReply::Done => Redirect::to("/searches"),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RenameForm {
    pub name: String,
}

/// `POST /searches/{id}` (`name`): renames it.
pub async fn rename(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<RenameForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    let name = saved::check_name(&form.name).map_err(field("name"))?;
    exists(&state, id).await?;
    command(
        &state,
        Command::RenameSearch {
            search_id: id,
            name,
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/searches#search-{id}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PinForm {
    /// `1` pins, `0` unpins.
    pub pinned: String,
}

/// `POST /searches/{id}/pin` (`pinned` = 1 or 0).
pub async fn pin(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<PinForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    let pinned = match form.pinned.as_str() {
        "1" => true,
        "0" => false,
        other => {
            return Err(WebError::BadRequest(format!(
                "invalid form field `pinned`: `{other}` is not 1 or 0"
            )));
        }
    };
    exists(&state, id).await?;
    command(
        &state,
        Command::PinSearch {
            search_id: id,
            pinned,
        },
    )
    .await?;
    Ok(Redirect::to("/searches"))
}

/// `POST /searches/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    exists(&state, id).await?;
    command(&state, Command::DeleteSearch { search_id: id }).await?;
    Ok(Redirect::to("/searches"))
}

async fn exists(state: &AppState, id: i64) -> Result<(), WebError> {
    let found = state.reads().run(move |c| saved::search(c, id)).await?;
    match found {
        Some(_) => Ok(()),
        None => Err(WebError::NotFound(format!("no saved search with id {id}"))),
    }
}

async fn command(state: &AppState, command: Command) -> Result<CommandReply, WebError> {
    state
        .shared
        .writer
        .command(command)
        .await
        .map_err(WebError::command("search not saved"))
}

fn field(name: &'static str) -> impl Fn(saved::SearchError) -> WebError {
    move |e| WebError::BadRequest(format!("invalid form field `{name}`: {e}"))
}

/// The "Save this search" form for a list page: posts the page's own `url` (path and
/// query) with a name the owner types.
pub fn save_form(url: &str) -> Markup {
    html! {
        form.save-search method="post" action="/searches" {
            (csrf_field())
            input type="hidden" name="url" value=(url);
            label {
                span { "Save this search as" }
                input type="text" name="name" required maxlength=(saved::MAX_NAME_CHARS) size="18" placeholder="name";
            }
            button type="submit" { "Save" }
            " "
            a href="/searches" { "saved searches" }
        }
    }
}

/// Links to the pinned searches, for the overview.
pub fn pinned_links(searches: &[SavedSearch]) -> Markup {
    html! {
        @if !searches.is_empty() {
            nav.pinned aria-label="pinned searches" {
                span.label { "Pinned searches" }
                @for s in searches {
                    a href=(s.url) { (s.name) }
                }
            }
        }
    }
}

fn render(searches: &[SavedSearch]) -> Markup {
    shell(
        "Saved searches",
        Nav::Searches,
        false,
        html! {
            h1 { "Saved searches" }
            p.hint {
                "A saved search is a page with its filters: use \"Save this search\" under a filter form, "
                "or paste a netmon URL below. Pinned searches come first and show on the overview."
            }
            @if searches.is_empty() {
                p.empty { "No saved searches." }
            } @else {
                table.saved {
                    thead { tr { th { "Name" } th { "Search" } th { "Saved" } th { "" } } }
                    tbody {
                        @for s in searches {
                            tr id=(format!("search-{}", s.id)) {
                                td {
                                    form.inline method="post" action=(format!("/searches/{}", s.id)) {
                                        (csrf_field())
                                        input type="text" name="name" value=(s.name) required
                                            maxlength=(saved::MAX_NAME_CHARS) size="18" aria-label="name";
                                        button type="submit" { "Rename" }
                                    }
                                }
                                td.url { a href=(s.url) { (s.url) } }
                                td { (time(s.created_at)) }
                                td.actions {
                                    form.inline method="post" action=(format!("/searches/{}/pin", s.id)) {
                                        (csrf_field())
                                        @if s.pinned {
                                            input type="hidden" name="pinned" value="0";
                                            button type="submit" aria-pressed="true" { "Unpin" }
                                        } @else {
                                            input type="hidden" name="pinned" value="1";
                                            button type="submit" { "Pin" }
                                        }
                                    }
                                    form.inline method="post" action=(format!("/searches/{}/delete", s.id)) {
                                        (csrf_field())
                                        button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Save a search" }
            form.filters method="post" action="/searches" {
                (csrf_field())
                label {
                    span { "Name" }
                    input type="text" name="name" required maxlength=(saved::MAX_NAME_CHARS) size="18";
                }
                label {
                    span { "URL" }
                    input type="text" name="url" required maxlength=(saved::MAX_URL_BYTES) size="48"
                        placeholder="/flows?domain=example.com";
                }
                button type="submit" { "Save" }
            }
        },
    )
}
