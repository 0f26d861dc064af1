/** Internal type. DO NOT USE DIRECTLY. */
type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
/** Internal type. DO NOT USE DIRECTLY. */
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
import type { DocumentTypeDecoration } from '@graphql-typed-document-node/core';
export type BookingStatus =
  | 'CANCELLED'
  | 'CONFIRMED'
  | 'EXPIRED'
  | 'FAILED'
  | 'HELD'
  | 'PAYMENT_FAILED';

export type HoldSeatsInput = {
  /** Retrying with the same key returns the same booking instead of a second hold. */
  idempotencyKey: string;
  seatIds: Array<string>;
  showtimeId: string;
};

export type LoginInput = {
  email: string;
  password: string;
};

export type PayBookingInput = {
  bookingId: string;
  idempotencyKey: string;
  /** A payment method token, e.g. `pm_card_ok`. */
  paymentMethod: string;
};

export type RegisterInput = {
  email: string;
  name: string;
  password: string;
  /** E.164, for SMS notifications. */
  phone?: string | null | undefined;
};

export type SeatState =
  | 'AVAILABLE'
  | 'BLOCKED'
  | 'BOOKED'
  | 'HELD';

export type TicketStatus =
  | 'CHECKED_IN'
  | 'REVOKED'
  | 'VALID';

export type MoneyFieldsFragment = { amount: number, currency: string };

export type ShowtimeCardFragment = { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } };

export type BookingFieldsFragment = { id: string, status: BookingStatus, expiresAt: string | null, createdAt: string, reason: string | null, seats: Array<{ seatId: string, category: string, price: { amount: number, currency: string } }>, total: { amount: number, currency: string }, refund: { amount: { amount: number, currency: string }, fee: { amount: number, currency: string } } | null, showtime: { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } };

export type SessionFragment = { token: string, refreshToken: string, user: { id: string, name: string, email: string } };

export type ShowtimesQueryVariables = Exact<{
  date?: string | null | undefined;
  cinemaId?: string | null | undefined;
  movieId?: string | null | undefined;
}>;


export type ShowtimesQuery = { showtimes: Array<{ id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } }> };

export type CinemasQueryVariables = Exact<{ [key: string]: never; }>;


export type CinemasQuery = { cinemas: Array<{ id: string, name: string, city: string }> };

export type MoviesQueryVariables = Exact<{
  search?: string | null | undefined;
  first?: number | null | undefined;
}>;


export type MoviesQuery = { movies: { nodes: Array<{ id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }> } };

export type ShowtimeSeatsQueryVariables = Exact<{
  id: string;
}>;


export type ShowtimeSeatsQuery = { showtime: { id: string, startsAt: string, screenName: string, prices: Array<{ category: string, price: { amount: number, currency: string } }>, seatMap: { seats: Array<{ id: string, row: string, number: number, category: string, state: SeatState, accessible: boolean, companion: boolean, position: number, price: { amount: number, currency: string } }> }, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } | null };

export type SuggestSeatsQueryVariables = Exact<{
  showtimeId: string;
  count: number;
}>;


export type SuggestSeatsQuery = { suggestSeats: Array<{ id: string }> };

export type HoldSeatsMutationVariables = Exact<{
  input: HoldSeatsInput;
}>;


export type HoldSeatsMutation = { holdSeats: { id: string, status: BookingStatus, expiresAt: string | null, createdAt: string, reason: string | null, seats: Array<{ seatId: string, category: string, price: { amount: number, currency: string } }>, total: { amount: number, currency: string }, refund: { amount: { amount: number, currency: string }, fee: { amount: number, currency: string } } | null, showtime: { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } } };

export type PayBookingMutationVariables = Exact<{
  input: PayBookingInput;
}>;


export type PayBookingMutation = { payBooking: { id: string, status: BookingStatus, expiresAt: string | null, createdAt: string, reason: string | null, seats: Array<{ seatId: string, category: string, price: { amount: number, currency: string } }>, total: { amount: number, currency: string }, refund: { amount: { amount: number, currency: string }, fee: { amount: number, currency: string } } | null, showtime: { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } } };

export type BookingQueryVariables = Exact<{
  id: string;
}>;


export type BookingQuery = { booking: { id: string, status: BookingStatus, expiresAt: string | null, createdAt: string, reason: string | null, tickets: Array<{ id: string, seatId: string, status: TicketStatus, checkedInAt: string | null, code: string, qrSvg: string }>, seats: Array<{ seatId: string, category: string, price: { amount: number, currency: string } }>, total: { amount: number, currency: string }, refund: { amount: { amount: number, currency: string }, fee: { amount: number, currency: string } } | null, showtime: { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } } | null };

export type CancelBookingMutationVariables = Exact<{
  id: string;
}>;


export type CancelBookingMutation = { cancelBooking: { id: string, status: BookingStatus, expiresAt: string | null, createdAt: string, reason: string | null, seats: Array<{ seatId: string, category: string, price: { amount: number, currency: string } }>, total: { amount: number, currency: string }, refund: { amount: { amount: number, currency: string }, fee: { amount: number, currency: string } } | null, showtime: { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } } };

export type RegisterMutationVariables = Exact<{
  input: RegisterInput;
}>;


export type RegisterMutation = { register: { token: string, refreshToken: string, user: { id: string, name: string, email: string } } };

export type LoginMutationVariables = Exact<{
  input: LoginInput;
}>;


export type LoginMutation = { login: { token: string, refreshToken: string, user: { id: string, name: string, email: string } } };

export type RefreshTokenMutationVariables = Exact<{
  refreshToken: string;
}>;


export type RefreshTokenMutation = { refreshToken: { token: string, refreshToken: string, user: { id: string, name: string, email: string } } };

export type LogoutMutationVariables = Exact<{
  refreshToken: string;
}>;


export type LogoutMutation = { logout: boolean };

export type MyBookingsQueryVariables = Exact<{
  first?: number | null | undefined;
  after?: string | null | undefined;
}>;


export type MyBookingsQuery = { me: { id: string, bookings: { nodes: Array<{ id: string, status: BookingStatus, expiresAt: string | null, createdAt: string, reason: string | null, seats: Array<{ seatId: string, category: string, price: { amount: number, currency: string } }>, total: { amount: number, currency: string }, refund: { amount: { amount: number, currency: string }, fee: { amount: number, currency: string } } | null, showtime: { id: string, startsAt: string, screenName: string, movie: { id: string, title: string, runtimeMinutes: number, rating: string, posterUrl: string | null }, cinema: { id: string, name: string, city: string, timeZone: string } } }>, pageInfo: { hasNextPage: boolean, endCursor: string | null } } } | null };

export type MyNotificationsQueryVariables = Exact<{
  first?: number | null | undefined;
  after?: string | null | undefined;
}>;


export type MyNotificationsQuery = { me: { id: string, notifications: { nodes: Array<{ id: string, channel: string, subject: string, body: string, sentAt: string }>, pageInfo: { hasNextPage: boolean, endCursor: string | null } } } | null };

export type SeatMapLiveSubscriptionVariables = Exact<{
  showtimeId: string;
}>;


export type SeatMapLiveSubscription = { seatMap: { resync: boolean, changes: Array<{ seatId: string, state: SeatState }> } };

export type CancellationQuoteQueryVariables = Exact<{
  id: string;
}>;


export type CancellationQuoteQuery = { booking: { id: string, cancellation: { cancellable: boolean, closesAt: string | null, refund: { amount: number, currency: string }, fee: { amount: number, currency: string } } } | null };

export class TypedDocumentString<TResult, TVariables>
  extends String
  implements DocumentTypeDecoration<TResult, TVariables>
{
  __apiType?: NonNullable<DocumentTypeDecoration<TResult, TVariables>['__apiType']>;
  private value: string;
  public __meta__?: Record<string, any> | undefined;

  constructor(value: string, __meta__?: Record<string, any> | undefined) {
    super(value);
    this.value = value;
    this.__meta__ = __meta__;
  }

  override toString(): string & DocumentTypeDecoration<TResult, TVariables> {
    return this.value;
  }
}
export const MoneyFieldsFragmentDoc = new TypedDocumentString(`
    fragment MoneyFields on Money {
  amount
  currency
}
    `, {"fragmentName":"MoneyFields"}) as unknown as TypedDocumentString<MoneyFieldsFragment, unknown>;
export const ShowtimeCardFragmentDoc = new TypedDocumentString(`
    fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}
    `, {"fragmentName":"ShowtimeCard"}) as unknown as TypedDocumentString<ShowtimeCardFragment, unknown>;
export const BookingFieldsFragmentDoc = new TypedDocumentString(`
    fragment BookingFields on Booking {
  id
  status
  expiresAt
  createdAt
  reason
  seats {
    seatId
    category
    price {
      ...MoneyFields
    }
  }
  total {
    ...MoneyFields
  }
  refund {
    amount {
      ...MoneyFields
    }
    fee {
      ...MoneyFields
    }
  }
  showtime {
    ...ShowtimeCard
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}`, {"fragmentName":"BookingFields"}) as unknown as TypedDocumentString<BookingFieldsFragment, unknown>;
export const SessionFragmentDoc = new TypedDocumentString(`
    fragment Session on AuthPayload {
  token
  refreshToken
  user {
    id
    name
    email
  }
}
    `, {"fragmentName":"Session"}) as unknown as TypedDocumentString<SessionFragment, unknown>;
export const ShowtimesDocument = new TypedDocumentString(`
    query Showtimes($date: Date, $cinemaId: ID, $movieId: ID) {
  showtimes(date: $date, cinemaId: $cinemaId, movieId: $movieId) {
    ...ShowtimeCard
  }
}
    fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}`) as unknown as TypedDocumentString<ShowtimesQuery, ShowtimesQueryVariables>;
export const CinemasDocument = new TypedDocumentString(`
    query Cinemas {
  cinemas {
    id
    name
    city
  }
}
    `) as unknown as TypedDocumentString<CinemasQuery, CinemasQueryVariables>;
export const MoviesDocument = new TypedDocumentString(`
    query Movies($search: String, $first: Int) {
  movies(search: $search, first: $first) {
    nodes {
      id
      title
      runtimeMinutes
      rating
      posterUrl
    }
  }
}
    `) as unknown as TypedDocumentString<MoviesQuery, MoviesQueryVariables>;
export const ShowtimeSeatsDocument = new TypedDocumentString(`
    query ShowtimeSeats($id: ID!) {
  showtime(id: $id) {
    ...ShowtimeCard
    prices {
      category
      price {
        ...MoneyFields
      }
    }
    seatMap {
      seats {
        id
        row
        number
        category
        state
        accessible
        companion
        position
        price {
          ...MoneyFields
        }
      }
    }
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}`) as unknown as TypedDocumentString<ShowtimeSeatsQuery, ShowtimeSeatsQueryVariables>;
export const SuggestSeatsDocument = new TypedDocumentString(`
    query SuggestSeats($showtimeId: ID!, $count: Int!) {
  suggestSeats(showtimeId: $showtimeId, count: $count) {
    id
  }
}
    `) as unknown as TypedDocumentString<SuggestSeatsQuery, SuggestSeatsQueryVariables>;
export const HoldSeatsDocument = new TypedDocumentString(`
    mutation HoldSeats($input: HoldSeatsInput!) {
  holdSeats(input: $input) {
    ...BookingFields
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}
fragment BookingFields on Booking {
  id
  status
  expiresAt
  createdAt
  reason
  seats {
    seatId
    category
    price {
      ...MoneyFields
    }
  }
  total {
    ...MoneyFields
  }
  refund {
    amount {
      ...MoneyFields
    }
    fee {
      ...MoneyFields
    }
  }
  showtime {
    ...ShowtimeCard
  }
}`) as unknown as TypedDocumentString<HoldSeatsMutation, HoldSeatsMutationVariables>;
export const PayBookingDocument = new TypedDocumentString(`
    mutation PayBooking($input: PayBookingInput!) {
  payBooking(input: $input) {
    ...BookingFields
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}
fragment BookingFields on Booking {
  id
  status
  expiresAt
  createdAt
  reason
  seats {
    seatId
    category
    price {
      ...MoneyFields
    }
  }
  total {
    ...MoneyFields
  }
  refund {
    amount {
      ...MoneyFields
    }
    fee {
      ...MoneyFields
    }
  }
  showtime {
    ...ShowtimeCard
  }
}`) as unknown as TypedDocumentString<PayBookingMutation, PayBookingMutationVariables>;
export const BookingDocument = new TypedDocumentString(`
    query Booking($id: ID!) {
  booking(id: $id) {
    ...BookingFields
    tickets {
      id
      seatId
      status
      checkedInAt
      code
      qrSvg
    }
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}
fragment BookingFields on Booking {
  id
  status
  expiresAt
  createdAt
  reason
  seats {
    seatId
    category
    price {
      ...MoneyFields
    }
  }
  total {
    ...MoneyFields
  }
  refund {
    amount {
      ...MoneyFields
    }
    fee {
      ...MoneyFields
    }
  }
  showtime {
    ...ShowtimeCard
  }
}`) as unknown as TypedDocumentString<BookingQuery, BookingQueryVariables>;
export const CancelBookingDocument = new TypedDocumentString(`
    mutation CancelBooking($id: ID!) {
  cancelBooking(id: $id) {
    ...BookingFields
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}
fragment BookingFields on Booking {
  id
  status
  expiresAt
  createdAt
  reason
  seats {
    seatId
    category
    price {
      ...MoneyFields
    }
  }
  total {
    ...MoneyFields
  }
  refund {
    amount {
      ...MoneyFields
    }
    fee {
      ...MoneyFields
    }
  }
  showtime {
    ...ShowtimeCard
  }
}`) as unknown as TypedDocumentString<CancelBookingMutation, CancelBookingMutationVariables>;
export const RegisterDocument = new TypedDocumentString(`
    mutation Register($input: RegisterInput!) {
  register(input: $input) {
    ...Session
  }
}
    fragment Session on AuthPayload {
  token
  refreshToken
  user {
    id
    name
    email
  }
}`) as unknown as TypedDocumentString<RegisterMutation, RegisterMutationVariables>;
export const LoginDocument = new TypedDocumentString(`
    mutation Login($input: LoginInput!) {
  login(input: $input) {
    ...Session
  }
}
    fragment Session on AuthPayload {
  token
  refreshToken
  user {
    id
    name
    email
  }
}`) as unknown as TypedDocumentString<LoginMutation, LoginMutationVariables>;
export const RefreshTokenDocument = new TypedDocumentString(`
    mutation RefreshToken($refreshToken: String!) {
  refreshToken(refreshToken: $refreshToken) {
    ...Session
  }
}
    fragment Session on AuthPayload {
  token
  refreshToken
  user {
    id
    name
    email
  }
}`) as unknown as TypedDocumentString<RefreshTokenMutation, RefreshTokenMutationVariables>;
export const LogoutDocument = new TypedDocumentString(`
    mutation Logout($refreshToken: String!) {
  logout(refreshToken: $refreshToken)
}
    `) as unknown as TypedDocumentString<LogoutMutation, LogoutMutationVariables>;
export const MyBookingsDocument = new TypedDocumentString(`
    query MyBookings($first: Int, $after: String) {
  me {
    id
    bookings(first: $first, after: $after) {
      nodes {
        ...BookingFields
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}
fragment ShowtimeCard on Showtime {
  id
  startsAt
  screenName
  movie {
    id
    title
    runtimeMinutes
    rating
    posterUrl
  }
  cinema {
    id
    name
    city
    timeZone
  }
}
fragment BookingFields on Booking {
  id
  status
  expiresAt
  createdAt
  reason
  seats {
    seatId
    category
    price {
      ...MoneyFields
    }
  }
  total {
    ...MoneyFields
  }
  refund {
    amount {
      ...MoneyFields
    }
    fee {
      ...MoneyFields
    }
  }
  showtime {
    ...ShowtimeCard
  }
}`) as unknown as TypedDocumentString<MyBookingsQuery, MyBookingsQueryVariables>;
export const MyNotificationsDocument = new TypedDocumentString(`
    query MyNotifications($first: Int, $after: String) {
  me {
    id
    notifications(first: $first, after: $after) {
      nodes {
        id
        channel
        subject
        body
        sentAt
      }
      pageInfo {
        hasNextPage
        endCursor
      }
    }
  }
}
    `) as unknown as TypedDocumentString<MyNotificationsQuery, MyNotificationsQueryVariables>;
export const SeatMapLiveDocument = new TypedDocumentString(`
    subscription SeatMapLive($showtimeId: ID!) {
  seatMap(showtimeId: $showtimeId, coalesce: true) {
    resync
    changes {
      seatId
      state
    }
  }
}
    `) as unknown as TypedDocumentString<SeatMapLiveSubscription, SeatMapLiveSubscriptionVariables>;
export const CancellationQuoteDocument = new TypedDocumentString(`
    query CancellationQuote($id: ID!) {
  booking(id: $id) {
    id
    cancellation {
      cancellable
      refund {
        ...MoneyFields
      }
      fee {
        ...MoneyFields
      }
      closesAt
    }
  }
}
    fragment MoneyFields on Money {
  amount
  currency
}`) as unknown as TypedDocumentString<CancellationQuoteQuery, CancellationQuoteQueryVariables>;