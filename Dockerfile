# The feedmeter binary, for docker-compose.yml.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /feedmeter ./cmd/feedmeter

FROM gcr.io/distroless/static-debian12
COPY --from=build /feedmeter /feedmeter
ENTRYPOINT ["/feedmeter"]
