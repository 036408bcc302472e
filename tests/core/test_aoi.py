"""AOI parsing (WKT, GeoJSON, bbox), validation messages, geodesic area, vector files."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import box

from clearsky.core.aoi import Aoi, aoi_from_file, parse_aoi
from clearsky.core.errors import AoiError

SQUARE = "POLYGON ((13.3 52.4, 13.5 52.4, 13.5 52.6, 13.3 52.6, 13.3 52.4))"


# --------------------------------------------------------------------------- text


def test_wkt_polygon():
    aoi = parse_aoi(SQUARE)
    assert aoi.crs == "EPSG:4326"
    assert aoi.geometry.equals(box(13.3, 52.4, 13.5, 52.6))


def test_ewkt_srid_names_the_crs():
    aoi = parse_aoi("SRID=25833;POLYGON ((390000 5810000, 400000 5810000, 400000 5820000, "
                    "390000 5810000))")
    assert aoi.crs == "EPSG:25833"
    assert aoi.geometry.area == pytest.approx(5e7)


@pytest.mark.parametrize("text", ["13.3,52.4,13.5,52.6", "13.3 52.4 13.5 52.6",
                                  " 13.3, 52.4 ,13.5,52.6 ", "1.33e1,52.4,13.5,52.6"])
def test_bbox_text_comma_or_space_separated(text):
    assert parse_aoi(text).geometry.equals(box(13.3, 52.4, 13.5, 52.6))


def test_bbox_in_a_projected_crs():
    aoi = parse_aoi("390000,5810000,400000,5820000", crs="EPSG:25833")
    assert aoi.crs == "EPSG:25833" and aoi.geometry.area == pytest.approx(1e8)


def test_bbox_min_greater_than_max_says_how_to_write_it():
    with pytest.raises(AoiError, match=r"min > max: write it as minx,miny,maxx,maxy"):
        parse_aoi("13.5,52.4,13.3,52.6")


def test_geojson_geometry_feature_and_collection_union():
    a = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    b = {"type": "Polygon", "coordinates": [[[2, 0], [3, 0], [3, 1], [2, 1], [2, 0]]]}
    c = {"type": "Polygon", "coordinates": [[[0.5, 0], [1.5, 0], [1.5, 1], [0.5, 1], [0.5, 0]]]}
    assert parse_aoi(json.dumps(a)).geometry.area == pytest.approx(1)
    feature = {"type": "Feature", "properties": {}, "geometry": b}
    assert parse_aoi(json.dumps(feature)).geometry.bounds == (2, 0, 3, 1)
    point = {"type": "Feature", "properties": {}, "geometry": {"type": "Point",
                                                               "coordinates": [9, 9]}}
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": g} for g in (a, b, c)] + [point]}
    union = parse_aoi(json.dumps(fc)).geometry
    assert union.geom_type == "MultiPolygon"
    assert union.area == pytest.approx(2.5)  # a and c overlap by half; the point is ignored


def test_geojson_named_crs_is_used():
    fc = {"type": "FeatureCollection",
          "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::25833"}},
          "features": [{"type": "Feature", "properties": {}, "geometry": {
              "type": "Polygon", "coordinates": [[[390000, 5810000], [391000, 5810000],
                                                  [391000, 5811000], [390000, 5810000]]]}}]}
    aoi = parse_aoi(json.dumps(fc))
    assert aoi.crs == "urn:ogc:def:crs:EPSG::25833"
    assert aoi.wgs84.bounds[0] == pytest.approx(13.38, abs=0.02)


def test_geojson_without_polygon_says_what_it_holds():
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 2]}},
        {"type": "Feature", "properties": {},
         "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}]}
    with pytest.raises(AoiError, match="holds LineString, Point, not a polygon"):
        parse_aoi(json.dumps(fc))


def test_wkt_line_is_not_a_polygon():
    with pytest.raises(AoiError, match="must be a polygon, not a LineString"):
        parse_aoi("LINESTRING (0 0, 1 1)")


@pytest.mark.parametrize("text", ["", "   ", "POLYGON EMPTY"])
def test_empty(text):
    with pytest.raises(AoiError, match="empty"):
        parse_aoi(text)


@pytest.mark.parametrize("text", ["Berlin", "POLYGON ((0 0, 1 0", "1,2,3", "{not json"])
def test_unreadable_text_lists_the_accepted_formats(text):
    with pytest.raises(AoiError) as err:
        parse_aoi(text)
    if not text.startswith("{"):
        assert "WKT" in str(err.value) and "GeoJSON" in str(err.value)
        assert "minx,miny,maxx,maxy" in str(err.value)
    else:
        assert "not valid JSON" in str(err.value)


def test_self_intersecting_bow_tie_is_refused_with_the_place():
    with pytest.raises(AoiError) as err:
        parse_aoi("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))")
    assert "self-intersects near (0.5, 0.5)" in str(err.value)


def test_tiny_self_intersection_is_repaired_when_the_area_survives():
    # a 10 x 10 square whose top edge dips through the bottom edge by a hair
    text = ("POLYGON ((0 0, 10 0, 10 10, 5 10, 5 -0.01, 4.99 -0.01, 4.99 10, 0 10, 0 0))")
    aoi = parse_aoi(text, crs="EPSG:32633")
    assert aoi.geometry.is_valid
    assert aoi.geometry.area == pytest.approx(99.9, rel=0.01)


def test_lon_lat_out_of_range_suggests_another_crs():
    with pytest.raises(AoiError, match="outside the longitude -180..180 / latitude -90..90"):
        parse_aoi("390000,5810000,400000,5820000")


def test_degenerate_polygon_has_no_area():
    with pytest.raises(AoiError, match="no area"):
        parse_aoi("POLYGON ((0 0, 1 1, 2 2, 0 0))", crs="EPSG:32633")


# --------------------------------------------------------------------------- area


def test_area_km2_is_geodesic_in_any_crs():
    # a 10 km grid square on the UTM 33N central meridian: the ground is 1/0.9996^2 larger
    utm = Aoi(box(495000, 5800000, 505000, 5810000), "EPSG:32633")
    assert utm.area_km2 == pytest.approx(100 / 0.9996**2, abs=0.01)
    # the same ground in lon/lat and in web mercator
    assert Aoi(utm.wgs84, "EPSG:4326").area_km2 == pytest.approx(utm.area_km2, rel=1e-6)
    assert Aoi(utm.to_crs("EPSG:3857"), "EPSG:3857").area_km2 == pytest.approx(
        utm.area_km2, rel=1e-4)


# --------------------------------------------------------------------------- files


def _write(path, driver, epsg, features, layer="areas"):
    from osgeo import ogr, osr

    srs = None
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    lyr = ds.CreateLayer(layer, srs, ogr.wkbUnknown)
    lyr.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for name, wkt in features:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("name", name)
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        lyr.CreateFeature(f)
    ds = None  # noqa: F841 - closes and flushes the file


PARKS = [
    ("a", "POLYGON ((390000 5810000, 391000 5810000, 391000 5811000, 390000 5811000, "
          "390000 5810000))"),
    ("b", "POLYGON ((395000 5810000, 395500 5810000, 395500 5810500, 395000 5810500, "
          "395000 5810000))"),
    ("gate", "POINT (392000 5812000)"),
]


def test_geopackage_union_of_polygons_in_the_layer_crs(tmp_path):
    path = tmp_path / "parks.gpkg"
    _write(path, "GPKG", 25833, PARKS)
    aoi = aoi_from_file(path)
    assert aoi.crs == "EPSG:25833"
    assert aoi.geometry.geom_type == "MultiPolygon"
    assert aoi.geometry.area == pytest.approx(1_000_000 + 250_000)
    only_b = aoi_from_file(path, layer="areas", where="name = 'b'")
    assert only_b.geometry.area == pytest.approx(250_000)


def test_geojson_file_is_wgs84(tmp_path):
    path = tmp_path / "aoi.geojson"
    _write(path, "GeoJSON", 4326, [("x", SQUARE)])
    aoi = aoi_from_file(path)
    assert aoi.crs == "EPSG:4326"
    assert aoi.geometry.equals(box(13.3, 52.4, 13.5, 52.6))


def test_file_errors_are_plain(tmp_path):
    gpkg = tmp_path / "parks.gpkg"
    _write(gpkg, "GPKG", 25833, PARKS)
    with pytest.raises(AoiError, match="has no layer 'roads'; its layers are: areas"):
        aoi_from_file(gpkg, layer="roads")
    with pytest.raises(AoiError, match="has no polygon matching \"name = 'gate'\" "
                                       r"\(it holds Point\)"):
        aoi_from_file(gpkg, where="name = 'gate'")
    with pytest.raises(AoiError, match="filter .* is not valid"):
        aoi_from_file(gpkg, where="nonsense ===")
    with pytest.raises(AoiError, match="does not exist"):
        aoi_from_file(tmp_path / "nothing.gpkg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AoiError, match="Could not open .* as a vector file"):
        aoi_from_file(text)
    shp = tmp_path / "noprj.shp"
    _write(shp, "ESRI Shapefile", None, PARKS[:1], layer="noprj")
    with pytest.raises(AoiError, match=r"has no CRS \(a Shapefile needs its .prj file\)"):
        aoi_from_file(shp)
