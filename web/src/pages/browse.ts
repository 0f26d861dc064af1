/** Showtimes by date, cinema and movie, with a movie search. */
import { request } from "../api/client";
import { CinemasDocument, MoviesDocument, ShowtimesDocument, type ShowtimeCardFragment } from "../api/generated";
import { describeError } from "../lib/errors";
import { formatShowTime, today } from "../lib/time";
import { h, notice, replace } from "../ui/dom";

export function poster(url: string | null, title: string): HTMLElement {
  const box = h("div", { class: "poster", "aria-hidden": "true" }, title.slice(0, 1));
  if (url) {
    const img = h("img", { src: url, alt: "", loading: "lazy", width: 80, height: 120 });
    // Posters live on another host; a broken one falls back to the initial.
    img.addEventListener("error", () => img.remove());
    box.appendChild(img);
  }
  return box;
}

export function showtimeSummary(s: ShowtimeCardFragment): string {
  return `${formatShowTime(s.startsAt, s.cinema.timeZone)} · ${s.cinema.name}, ${s.screenName}`;
}

export function browsePage(main: HTMLElement): void {
  const params = new URLSearchParams(location.search);
  const date = h("input", { type: "date", id: "f-date", value: params.get("date") ?? today() });
  const cinema = h("select", { id: "f-cinema" }, h("option", { value: "" }, "All cinemas"));
  const search = h("input", { type: "search", id: "f-search", placeholder: "e.g. Orbit", autocomplete: "off" });
  const movieChoices = h("div", { class: "movie-choices", "aria-live": "polite" });
  const results = h("div", { class: "results", "aria-live": "polite", "aria-busy": "true" });
  let movieId: string | null = null;

  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Find showtimes", on: { submit: (e: Event) => (e.preventDefault(), void findMovies()) } },
    h("div", { class: "field" }, h("label", { for: "f-date" }, "Date"), date),
    h("div", { class: "field" }, h("label", { for: "f-cinema" }, "Cinema"), cinema),
    h("div", { class: "field" }, h("label", { for: "f-search" }, "Movie"), h("div", { class: "inline" }, search, h("button", { type: "submit" }, "Search movies"))),
  );
  replace(main, h("h1", null, "Showtimes"), form, movieChoices, results);

  async function findMovies(): Promise<void> {
    const text = search.value.trim();
    movieId = null;
    if (!text) {
      replace(movieChoices);
      return void load();
    }
    try {
      const { movies } = await request(MoviesDocument, { search: text, first: 10 });
      if (movies.nodes.length === 0) {
        replace(movieChoices, notice("info", `No movie matches “${text}”.`));
        replace(results);
        return;
      }
      replace(
        movieChoices,
        h("p", null, `Movies matching “${text}”:`),
        h("ul", { class: "chips" }, movies.nodes.map((m) =>
          h("li", null, h("button", { type: "button", "aria-pressed": "false", on: { click: (e: Event) => pick(m.id, e.currentTarget as HTMLButtonElement) } }, `${m.title} (${m.rating}, ${m.runtimeMinutes} min)`)),
        )),
      );
      movieId = movies.nodes.length === 1 ? movies.nodes[0].id : null;
      if (movieId) movieChoices.querySelector("button")?.setAttribute("aria-pressed", "true");
      await load();
    } catch (error) {
      replace(movieChoices, notice("error", describeError(error)));
    }
  }

  function pick(id: string, button: HTMLButtonElement): void {
    movieId = movieId === id ? null : id;
    for (const b of movieChoices.querySelectorAll("button")) b.setAttribute("aria-pressed", "false");
    if (movieId) button.setAttribute("aria-pressed", "true");
    void load();
  }

  async function load(): Promise<void> {
    results.setAttribute("aria-busy", "true");
    try {
      const { showtimes } = await request(ShowtimesDocument, {
        date: date.value || null,
        cinemaId: cinema.value || null,
        movieId,
      });
      results.setAttribute("aria-busy", "false");
      if (showtimes.length === 0) {
        replace(results, notice("info", "No showtimes match. Try another date or cinema."));
        return;
      }
      replace(results, h("h2", { class: "visually-hidden" }, `${showtimes.length} showtimes`), h("ul", { class: "showtimes" }, showtimes.map(card)));
    } catch (error) {
      results.setAttribute("aria-busy", "false");
      replace(results, notice("error", describeError(error)));
    }
  }

  function card(s: ShowtimeCardFragment): HTMLElement {
    return h(
      "li",
      { class: "showtime-card" },
      poster(s.movie.posterUrl, s.movie.title),
      h(
        "div",
        null,
        h("h3", null, h("a", { href: `#/showtime/${s.id}` }, s.movie.title)),
        h("p", { class: "meta" }, `${s.movie.rating || "Unrated"} · ${s.movie.runtimeMinutes} min`),
        h("p", null, h("time", { datetime: s.startsAt }, showtimeSummary(s))),
      ),
    );
  }

  date.addEventListener("change", () => void load());
  cinema.addEventListener("change", () => void load());
  void (async () => {
    try {
      const { cinemas } = await request(CinemasDocument, {});
      for (const c of cinemas) cinema.appendChild(h("option", { value: c.id }, `${c.name} (${c.city})`));
    } catch {
      // The list still works for all cinemas.
    }
  })();
  void load();
}
